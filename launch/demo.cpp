// demo.cpp: `kosmos demo`, the op set at work until the model issues make `kosmos train` the main job.
// Part 1 trains a two-layer MLP (linear -> LayerNorm -> GELU -> dropout -> linear -> cross-entropy, AdamW with
// global-norm clipping) to classify points drawn around 8 random centres, and prints the loss falling.
// Part 2 times one causal attention forward+backward at a small decoder shape.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <random>
#include <vector>

#include "backends/device.h"
#include "backends/error.h"
#include "launch/launch.h"

namespace kosmos {
namespace {

constexpr int64_t kPoints = 512, kFeatures = 32, kHidden = 64, kClasses = 8;

// A device tensor with a host mirror for filling and reading.
struct DemoTensor {
  Buffer buffer;
  TensorView view;
};

DemoTensor make_tensor(Device & device, DType dtype, std::initializer_list<int64_t> dims) {
  int64_t count = 1;
  for (int64_t size : dims) count *= size;
  DemoTensor tensor{device.allocate(static_cast<size_t>(count) * dtype_size(dtype), BufferUse::kActivations), {}};
  tensor.view = tensor.buffer.view(dtype, dims);
  return tensor;
}

template <typename T>
void upload(Device & device, Stream & stream, const DemoTensor & tensor, std::vector<T> & host) {
  TensorView source = tensor.view;
  source.data = host.data();
  device.copy(tensor.view, source, stream);
}

template <typename T>
std::vector<T> download(Device & device, Stream & stream, const DemoTensor & tensor) {
  std::vector<T> host(static_cast<size_t>(tensor.view.numel()));
  TensorView target = tensor.view;
  target.data = host.data();
  device.copy(target, tensor.view, stream);
  stream.synchronize();
  return host;
}

struct Parameter {
  DemoTensor value, grad, m, v;
};

Parameter make_parameter(Device & device, Stream & stream, std::initializer_list<int64_t> dims, float bound,
                         float constant, std::mt19937_64 & rng) {
  Parameter p{make_tensor(device, DType::kF32, dims), make_tensor(device, DType::kF32, dims),
              make_tensor(device, DType::kF32, dims), make_tensor(device, DType::kF32, dims)};
  std::uniform_real_distribution<float> uniform(-bound, bound);
  std::vector<float> init(static_cast<size_t>(p.value.view.numel()));
  for (float & x : init) x = bound > 0.0f ? uniform(rng) : constant;
  upload(device, stream, p.value, init);
  for (DemoTensor * state : {&p.m, &p.v}) op_run(device, Fill{state->view, 0.0f}, stream);
  return p;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void time_attention(std::ostream & out, Device & device, Stream & stream) {
  constexpr int64_t kBatch = 4, kHeads = 4, kLength = 256, kHeadDim = 64;
  std::vector<DemoTensor> tensors;
  for (int i = 0; i < 8; ++i) tensors.push_back(make_tensor(device, DType::kF32, {kBatch, kHeads, kLength, kHeadDim}));
  DemoTensor lse = make_tensor(device, DType::kF32, {kBatch, kHeads, kLength});
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> host(static_cast<size_t>(kBatch * kHeads * kLength * kHeadDim));
  for (int i : {0, 1, 2, 4}) {
    for (float & x : host) x = normal(rng);
    upload(device, stream, tensors[i], host);
  }
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  params.causal = true;
  const auto & [q, k, v, out_t, dout, dq, dk, dv] =
      std::tie(tensors[0].view, tensors[1].view, tensors[2].view, tensors[3].view, tensors[4].view, tensors[5].view,
               tensors[6].view, tensors[7].view);
  std::vector<double> times;
  for (int repeat = 0; repeat < 11; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    op_run(device, AttentionForward{out_t, lse.view, q, k, v, params, TensorView{}}, stream);
    op_run(device, AttentionBackward{dq, dk, dv, dout, q, k, v, out_t, lse.view, params, TensorView{}}, stream);
    stream.synchronize();
    if (repeat > 0) times.push_back(seconds_since(start));  // the first run warms caches
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  // Causal: forward 2 matmuls and backward 5 over half of the Tq x Tk scores, 2 flops per multiply-add.
  const double flops = 7.0 * kBatch * kHeads * kLength * kLength * kHeadDim;
  out << "attention forward+backward, causal [B=" << kBatch << ", H=" << kHeads << ", T=" << kLength
      << ", dh=" << kHeadDim << "]: " << std::fixed << std::setprecision(2) << median * 1e3 << " ms median of "
      << times.size() << " (" << std::setprecision(1) << flops / median * 1e-9 << " GFLOP/s)\n";
}

}  // namespace

int run_demo(std::ostream & out, const BackendRegistry & registry, const DemoOptions & options) {
  std::unique_ptr<Device> device = registry.create(options.backend, options.device);
  std::unique_ptr<Stream> stream_owner = device->create_stream();
  Stream & stream = *stream_owner;
  out << "device: " << device->name() << " (" << device->description() << ")\n";

  // Data: kClasses centres in kFeatures dims; each point is a centre plus unit noise.
  std::mt19937_64 rng(options.seed);
  std::normal_distribution<float> normal;
  std::vector<float> centres(kClasses * kFeatures), points(kPoints * kFeatures), weights(kPoints, 1.0f);
  std::vector<int32_t> labels(kPoints);
  for (float & x : centres) x = 1.5f * normal(rng);
  for (int64_t n = 0; n < kPoints; ++n) {
    labels[n] = static_cast<int32_t>(n % kClasses);
    for (int64_t f = 0; f < kFeatures; ++f) points[n * kFeatures + f] = centres[labels[n] * kFeatures + f] + normal(rng);
  }
  DemoTensor x = make_tensor(*device, DType::kF32, {kPoints, kFeatures});
  DemoTensor target = make_tensor(*device, DType::kI32, {kPoints});
  DemoTensor weight = make_tensor(*device, DType::kF32, {kPoints});
  upload(*device, stream, x, points);
  upload(*device, stream, target, labels);
  upload(*device, stream, weight, weights);

  // Parameters: PyTorch's default Linear init, LayerNorm at 1 and 0.
  Parameter w1 = make_parameter(*device, stream, {kHidden, kFeatures}, 1.0f / std::sqrt(float(kFeatures)), 0, rng);
  Parameter b1 = make_parameter(*device, stream, {kHidden}, 1.0f / std::sqrt(float(kFeatures)), 0, rng);
  Parameter gamma = make_parameter(*device, stream, {kHidden}, 0.0f, 1.0f, rng);
  Parameter beta = make_parameter(*device, stream, {kHidden}, 0.0f, 0.0f, rng);
  Parameter w2 = make_parameter(*device, stream, {kClasses, kHidden}, 1.0f / std::sqrt(float(kHidden)), 0, rng);
  Parameter b2 = make_parameter(*device, stream, {kClasses}, 1.0f / std::sqrt(float(kHidden)), 0, rng);
  std::vector<Parameter *> parameters{&w1, &b1, &gamma, &beta, &w2, &b2};

  // Activations, [kPoints, width] f32 each.
  DemoTensor h = make_tensor(*device, DType::kF32, {kPoints, kHidden});      // x W1^T + b1
  DemoTensor hn = make_tensor(*device, DType::kF32, {kPoints, kHidden});     // LayerNorm(h)
  DemoTensor act = make_tensor(*device, DType::kF32, {kPoints, kHidden});    // GELU(hn)
  DemoTensor dropped = make_tensor(*device, DType::kF32, {kPoints, kHidden});  // dropout(act)
  DemoTensor logits = make_tensor(*device, DType::kF32, {kPoints, kClasses});
  DemoTensor mean = make_tensor(*device, DType::kF32, {kPoints}), rstd = make_tensor(*device, DType::kF32, {kPoints});
  DemoTensor lse = make_tensor(*device, DType::kF32, {kPoints}), loss = make_tensor(*device, DType::kF32, {1});
  DemoTensor grad_a = make_tensor(*device, DType::kF32, {kPoints, kHidden});
  DemoTensor grad_b = make_tensor(*device, DType::kF32, {kPoints, kHidden});
  DemoTensor dlogits = make_tensor(*device, DType::kF32, {kPoints, kClasses});
  DemoTensor norm = make_tensor(*device, DType::kF32, {1});
  const float loss_scale = 1.0f / kPoints, clip = 1.0f, dropout_p = 0.1f;

  auto forward = [&](float p, uint64_t step) {
    op_run(*device, Matmul{h.view, x.view, w1.value.view, b1.value.view, false, true}, stream);
    op_run(*device, LayerNormForward{hn.view, mean.view, rstd.view, h.view, gamma.value.view, beta.value.view}, stream);
    op_run(*device, ActivationForward{act.view, hn.view, Activation::kGelu}, stream);
    op_run(*device, DropoutForward{dropped.view, act.view, TensorView{}, {p, options.seed, step * kPoints * kHidden}},
           stream);
    op_run(*device, Matmul{logits.view, dropped.view, w2.value.view, b2.value.view, false, true}, stream);
    op_run(*device, CrossEntropyForward{loss.view, lse.view, logits.view, target.view, weight.view, 0, 0, loss_scale},
           stream);
    return download<float>(*device, stream, loss)[0];
  };

  const auto start = std::chrono::steady_clock::now();
  float first_loss = 0.0f, last_loss = 0.0f;
  for (int step = 1; step <= options.steps; ++step) {
    last_loss = forward(dropout_p, static_cast<uint64_t>(step));
    if (step == 1) first_loss = last_loss;
    for (Parameter * p : parameters) op_run(*device, Fill{p->grad.view, 0.0f}, stream);
    op_run(*device, CrossEntropyBackward{dlogits.view, logits.view, target.view, weight.view, lse.view, 0, 0,
                                         loss_scale, 1.0f}, stream);
    matmul_backward(*device, MatmulBackward{grad_a.view, w2.grad.view, b2.grad.view, dlogits.view, dropped.view,
                                            w2.value.view, false, true}, stream);
    op_run(*device, DropoutBackward{grad_b.view, grad_a.view, {dropout_p, options.seed,
                                                                static_cast<uint64_t>(step) * kPoints * kHidden}},
           stream);
    op_run(*device, ActivationBackward{grad_a.view, grad_b.view, hn.view, Activation::kGelu}, stream);
    op_run(*device, LayerNormBackward{grad_b.view, gamma.grad.view, beta.grad.view, grad_a.view, h.view,
                                      gamma.value.view, mean.view, rstd.view}, stream);
    matmul_backward(*device, MatmulBackward{TensorView{}, w1.grad.view, b1.grad.view, grad_b.view, x.view,
                                            w1.value.view, false, true}, stream);
    op_run(*device, Fill{norm.view, 0.0f}, stream);
    for (Parameter * p : parameters) op_run(*device, SquaredNorm{norm.view, p->grad.view}, stream);
    const float grad_norm = std::sqrt(download<float>(*device, stream, norm)[0]);
    const float grad_scale = grad_norm > clip ? clip / grad_norm : 1.0f;
    for (Parameter * p : parameters)
      op_run(*device, AdamWStep{p->value.view, p->m.view, p->v.view, p->grad.view, 3e-3f, 0.9f, 0.98f, 1e-6f, 0.01f,
                                step, grad_scale}, stream);
    if (step == 1 || step % 50 == 0 || step == options.steps)
      out << "step " << std::setw(4) << step << "  loss " << std::fixed << std::setprecision(4) << last_loss
          << "  grad norm " << grad_norm << "\n";
  }
  const double train_seconds = seconds_since(start);
  forward(0.0f, 0);
  const std::vector<float> scores = download<float>(*device, stream, logits);
  int64_t correct = 0;
  for (int64_t n = 0; n < kPoints; ++n) {
    const float * row = scores.data() + n * kClasses;
    correct += std::max_element(row, row + kClasses) - row == labels[n];
  }
  out << "MLP demo: loss " << std::setprecision(4) << first_loss << " -> " << last_loss << ", training accuracy "
      << std::setprecision(1) << 100.0 * correct / kPoints << "% after " << options.steps << " steps ("
      << std::setprecision(2) << train_seconds << " s)\n";
  time_attention(out, *device, stream);
  KOSMOS_CHECK(std::isfinite(last_loss) && last_loss < first_loss, "demo: the loss did not fall (", first_loss, " -> ",
               last_loss, "); the op set is broken on device ", device->name());
  return 0;
}

}  // namespace kosmos
