"""Work around Debian python3-torch 1.13.1 on Python 3.11.

torch/distributed/_shard/sharded_tensor/metadata.py declares
`tensor_properties: TensorProperties = field(default=TensorProperties())`, which Python 3.11's dataclasses reject
(unhashable mutable default), so any `import torch.distributed.fsdp` / `torch.distributed._shard` raises ValueError.
transformers >= 4.46 imports torch.distributed.fsdp inside generate() (is_fsdp_managed_module).
Import this module BEFORE transformers: a meta-path hook loads that one module from a patched copy of its source
(default_factory, as torch 2.0 does upstream). Installed files are not touched.
"""
import importlib.abc, importlib.machinery, importlib.util, os, sys

_NAME = "torch.distributed._shard.sharded_tensor.metadata"
_BAD = "field(default=TensorProperties())"
_GOOD = "field(default_factory=TensorProperties)"


class _Loader(importlib.abc.SourceLoader):
    def __init__(self, path):
        self.path = path

    def get_filename(self, fullname):
        return self.path

    def get_data(self, path):
        with open(path, "rb") as f:
            data = f.read()
        return data.replace(_BAD.encode(), _GOOD.encode())


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _NAME or not path:
            return None
        for p in path:
            fn = os.path.join(p, "metadata.py")
            if os.path.exists(fn):
                return importlib.util.spec_from_file_location(fullname, fn, loader=_Loader(fn))
        return None


if _NAME not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
