// cpu_device.cpp: CpuDevice (aligned host buffers, synchronous stream, exhaustive op dispatch) and the CPU entry
// of the backend registry.
#include "backends/cpu/cpu_device.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>

#include "backends/cpu/cpu_context.h"
#include "backends/cpu/cpu_kernels.h"
#include "backends/error.h"

namespace kosmos::cpu {
namespace {

class CpuStream final : public Stream {
 public:
  void synchronize() override {}  // every CPU op has finished when it returns
};

class CpuEvent final : public Event {};

constexpr size_t kAlignment = 64;  // one cache line, one AVX-512 register

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse4.1";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "isa #" + std::to_string(static_cast<int>(isa));  // oneDNN adds ISAs between releases
  }
}

}  // namespace

std::string cpu_machine_summary() {
  const dnnl_version_t * version = dnnl_version();
  std::ostringstream out;
  out << cpu_model_name() << ", " << omp_get_max_threads() << " OpenMP threads, oneDNN " << version->major << '.'
      << version->minor << '.' << version->patch << " (isa " << isa_name(dnnl::get_effective_cpu_isa()) << ")";
  return out.str();
}

CpuDevice::CpuDevice() : context_(std::make_unique<CpuContext>()) {}
CpuDevice::~CpuDevice() = default;

std::string CpuDevice::description() const { return cpu_machine_summary(); }

Buffer CpuDevice::allocate(size_t bytes, BufferUse) {
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void * data = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  KOSMOS_CHECK(data != nullptr, "cpu: could not allocate ", bytes, " bytes of host memory; reduce the batch or model");
  return Buffer(this, data, bytes);
}

void CpuDevice::free_memory(void * data, size_t) { std::free(data); }

namespace {
constexpr size_t kReservedGranule = size_t{2} << 20;  // a transparent huge page
}

Buffer CpuDevice::reserve(BufferUse) {
  const size_t memory = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t capacity = (memory + kReservedGranule - 1) / kReservedGranule * kReservedGranule;
  void * base = mmap(nullptr, capacity, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return {};  // no room for the addresses (a ulimit -v): separate buffers instead
  return Buffer::reserved(this, base, capacity);
}

size_t CpuDevice::back_memory(void * base, size_t backed, size_t wanted, size_t capacity) {
  const size_t target = std::min(capacity, (wanted + kReservedGranule - 1) / kReservedGranule * kReservedGranule);
  const int status = mprotect(static_cast<char *>(base) + backed, target - backed, PROT_READ | PROT_WRITE);
  KOSMOS_CHECK(status == 0, "cpu: could not back ", target - backed, " more bytes of activations (", target,
               " in all): ", std::strerror(errno), "; reduce the batch or model");
  return target;
}

void CpuDevice::free_reserved(void * base, size_t capacity) noexcept { munmap(base, capacity); }

void CpuDevice::copy(TensorView dst, TensorView src, Stream &) {
  KOSMOS_CHECK(dst.dtype == src.dtype && same_dims(dst, src), "cpu copy: dst ", describe(dst), " and src ",
               describe(src), " must have the same dtype and shape");
  KOSMOS_CHECK(dst.is_contiguous() && src.is_contiguous(), "cpu copy: dst ", describe(dst), " and src ",
               describe(src), " must both be dense");
  std::memmove(dst.data, src.data, static_cast<size_t>(src.numel()) * dtype_size(src.dtype));
}

std::unique_ptr<Stream> CpuDevice::create_stream() { return std::make_unique<CpuStream>(); }
std::unique_ptr<Event> CpuDevice::create_event() { return std::make_unique<CpuEvent>(); }
void CpuDevice::record_event(Event &, Stream &) {}
void CpuDevice::wait_event(Stream &, Event &) {}

OpSupport CpuDevice::supports(const OpDesc & op) const {
  // oneDNN 2.x computes bf16 only with AVX-512 (avx512_core or newer); below that it has no bf16 kernels at all, and
  // only the matmul widens its operands to f32 itself (mixed-precision training needs it).
  const bool bf16_operand = std::visit(
      [](const auto & concrete) {
        using Op = std::decay_t<decltype(concrete)>;
        if constexpr (std::is_same_v<Op, Add>) return concrete.a.dtype == DType::kBF16;
        else if constexpr (std::is_same_v<Op, Scale>) return concrete.in.dtype == DType::kBF16;
        else return false;  // the other ops are f32, or own kernels that convert exactly (cast, fill)
      },
      op);
  if (bf16_operand && dnnl::get_effective_cpu_isa() < dnnl::cpu_isa::avx512_core)
    return {false, std::string("bf16 ") + op_name(op) + " needs AVX-512 on the CPU; oneDNN reports ISA " +
                       isa_name(dnnl::get_effective_cpu_isa()) + " here (use f32)"};
  return {};
}

void CpuDevice::run(const OpDesc & op, Stream &) {
  try {
    const auto start = profiling_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    std::visit([this](const auto & concrete) { cpu_op(*context_, concrete); }, op);
    if (profiling_) {
      OpTime & time = op_times_[op_name(op)];
      ++time.calls;
      time.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  } catch (const dnnl::error & error) {
    KOSMOS_FAIL(op_name(op), " on cpu: oneDNN refused it (", error.what(), ", status ", static_cast<int>(error.status),
                "); supports() should have said so: please report this with `kosmos info`");
  }
}

std::vector<std::pair<std::string, Device::OpTime>> CpuDevice::profile() const {
  return {op_times_.begin(), op_times_.end()};
}

BackendEntry cpu_backend_entry() {
  BackendEntry entry;
  entry.name = "cpu";
  entry.available = true;
  entry.device_count = [] { return 1; };
  entry.create = [](int ordinal) -> std::unique_ptr<Device> {
    KOSMOS_CHECK(ordinal == 0, "--backend cpu has one device (ordinal 0); got --device ", ordinal);
    return std::make_unique<CpuDevice>();
  };
  return entry;
}

}  // namespace kosmos::cpu
