// comm_staged.cpp: StagedComm, a Comm that stages device buffers through host memory around a host Comm. Receives
// inside a group are copied back when the group ends (when MPI has filled them); asynchronous sends keep their
// host copies until wait_sends().
#include "parallel/comm_staged.h"

#include <vector>

#include "backends/error.h"

namespace kosmos::parallel {
namespace {

// A host image of one buffer: the buffer itself when it is host memory, else a dense host copy.
struct Staged {
  TensorView device_view;            // what the caller passed
  TensorView host_view;              // what the host communicator sees
  std::vector<unsigned char> bytes;  // the host copy's own storage, when it cannot share the reused ones
  bool staged = false;
};

class StagedComm final : public Comm {
 public:
  StagedComm(std::unique_ptr<Comm> host, Device & device) : host_(std::move(host)), device_(device) {}

  int size() const override { return host_->size(); }
  int rank() const override { return host_->rank(); }

  void all_reduce(TensorView data, ReduceOp op, Stream & stream) override {
    Staged staged = stage(data, true, stream, "all_reduce", &reused_[0]);
    host_->all_reduce(staged.host_view, op, stream);
    publish(staged, stream);
  }
  void all_gather(TensorView out, TensorView in, Stream & stream) override {
    Staged staged_in = stage(in, true, stream, "all_gather in", &reused_[0]);
    Staged staged_out = stage(out, false, stream, "all_gather out", &reused_[1]);
    host_->all_gather(staged_out.host_view, staged_in.host_view, stream);
    publish(staged_out, stream);
  }
  void reduce_scatter(TensorView out, TensorView in, ReduceOp op, Stream & stream) override {
    Staged staged_in = stage(in, true, stream, "reduce_scatter in", &reused_[0]);
    Staged staged_out = stage(out, false, stream, "reduce_scatter out", &reused_[1]);
    host_->reduce_scatter(staged_out.host_view, staged_in.host_view, op, stream);
    publish(staged_out, stream);
  }
  void reduce(TensorView data, int root, ReduceOp op, Stream & stream) override {
    Staged staged = stage(data, true, stream, "reduce", &reused_[0]);
    host_->reduce(staged.host_view, root, op, stream);
    if (rank() == root) publish(staged, stream);  // the others' buffers are left as they were
  }
  void broadcast(TensorView data, int root, Stream & stream) override {
    Staged staged = stage(data, true, stream, "broadcast", &reused_[0]);
    host_->broadcast(staged.host_view, root, stream);
    publish(staged, stream);
  }
  void send(TensorView data, int peer, Stream & stream, int tag) override {
    if (grouped_) {  // the host copy must live until the group completes
      group_buffers_.push_back(stage(data, true, stream, "send"));
      host_->send(group_buffers_.back().host_view, peer, stream, tag);
      return;
    }
    Staged staged = stage(data, true, stream, "send", &reused_[0]);
    host_->send(staged.host_view, peer, stream, tag);
  }
  void recv(TensorView data, int peer, Stream & stream, int tag) override {
    // Inside a group the receive lands when the group ends, so it keeps a buffer of its own.
    Staged staged = stage(data, false, stream, "recv", grouped_ ? nullptr : &reused_[0]);
    host_->recv(staged.host_view, peer, stream, tag);
    if (grouped_) {
      group_receives_.push_back(std::move(staged));
      stream_of_group_ = &stream;
    } else {
      publish(staged, stream);
    }
  }
  void group_begin() override {
    host_->group_begin();
    grouped_ = true;
  }
  void group_end() override {
    host_->group_end();
    grouped_ = false;
    for (Staged & staged : group_receives_) publish(staged, *stream_of_group_);
    group_receives_.clear();
    group_buffers_.clear();
  }
  void send_async(TensorView data, int peer, Stream & stream, int tag) override {
    pending_sends_.push_back(stage(data, true, stream, "send_async"));
    host_->send_async(pending_sends_.back().host_view, peer, stream, tag);
  }
  void wait_sends() override {
    host_->wait_sends();
    pending_sends_.clear();
  }
  void barrier() override { host_->barrier(); }
  std::unique_ptr<Comm> split(int color, int key) override {
    return std::make_unique<StagedComm>(host_->split(color, key), device_);
  }
  Comm * wrapped() override { return host_.get(); }

 private:
  // The host image of `view`: in `reused` (grown, never shrunk: calls that finish before returning share these) or,
  // without it, in the Staged's own buffer (calls whose transfer outlives them: async sends, grouped p2p).
  Staged stage(const TensorView & view, bool fetch, Stream & stream, const char * what,
               std::vector<unsigned char> * reused = nullptr) {
    Staged staged;
    staged.device_view = view;
    staged.host_view = view;
    if (!view.present() || device_.is_host_memory(view.data)) return staged;
    KOSMOS_CHECK(view.is_contiguous(), what, ": ", describe(view), " on ", device_.name(),
                 " must be dense to pass through host memory");
    const size_t bytes = static_cast<size_t>(view.numel()) * dtype_size(view.dtype);
    std::vector<unsigned char> & storage = reused != nullptr ? *reused : staged.bytes;
    if (storage.size() < bytes) storage.resize(bytes);
    staged.host_view = make_view(storage.data(), view.dtype, view.ndim, view.dims.data());
    staged.staged = true;
    if (fetch) device_.copy(staged.host_view, view, stream);  // a copy to host memory has finished on return
    return staged;
  }
  void publish(const Staged & staged, Stream & stream) {
    if (staged.staged) device_.copy(staged.device_view, staged.host_view, stream);
  }

  std::unique_ptr<Comm> host_;
  Device & device_;
  bool grouped_ = false;
  Stream * stream_of_group_ = nullptr;
  std::vector<Staged> group_receives_, group_buffers_;
  std::vector<Staged> pending_sends_;
  std::vector<unsigned char> reused_[2];  // host images of the calls that complete before returning
};

}  // namespace

std::unique_ptr<Comm> staged_comm(std::unique_ptr<Comm> host, Device & device) {
  return std::make_unique<StagedComm>(std::move(host), device);
}

}  // namespace kosmos::parallel
