// reference.cpp: fp64 implementations of the op set, straight from the formulas. Clarity over speed.
#include "tests/reference/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "backends/philox.h"

namespace kosmos::reference {
namespace {

constexpr double kPi = 3.14159265358979323846;

int64_t product(const std::vector<int64_t> & dims) {
  int64_t count = 1;
  for (int64_t size : dims) count *= size;
  return count;
}

// Element (batch, row, col) of op(X) for a 2-D or 3-D X (a batch of 1 or no batch broadcasts).
double op_at(const Tensor & x, bool transposed, int64_t batch, int64_t row, int64_t col) {
  const bool batched = x.dims.size() == 3;
  const int64_t outer = x.dim(-2), inner = x.dim(-1);
  const int64_t entry = batched && x.dims[0] > 1 ? batch : 0;
  const int64_t r = transposed ? col : row, c = transposed ? row : col;
  return x.v[(entry * outer + r) * inner + c];
}

}  // namespace

Tensor::Tensor(std::vector<int64_t> shape, double fill) : dims(std::move(shape)), v(product(dims), fill) {}

Tensor matmul(const Tensor & a, const Tensor & b, const Tensor * bias, bool trans_a, bool trans_b, double alpha,
              double beta, const Tensor * c_old) {
  const int64_t m = trans_a ? a.dim(-1) : a.dim(-2), k = trans_a ? a.dim(-2) : a.dim(-1);
  const int64_t n = trans_b ? b.dim(-2) : b.dim(-1);
  const int64_t batch_a = a.dims.size() == 3 ? a.dims[0] : 1, batch_b = b.dims.size() == 3 ? b.dims[0] : 1;
  const int64_t batch = std::max(batch_a, batch_b);
  const bool batched = a.dims.size() == 3 || b.dims.size() == 3;
  Tensor c(batched ? std::vector<int64_t>{batch, m, n} : std::vector<int64_t>{m, n});
  for (int64_t e = 0; e < batch; ++e)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int64_t p = 0; p < k; ++p) sum += op_at(a, trans_a, e, i, p) * op_at(b, trans_b, e, p, j);
        const int64_t index = (e * m + i) * n + j;
        double value = alpha * sum;
        if (beta != 0.0) value += beta * c_old->v[index];
        if (bias) value += bias->v[j];
        c.v[index] = value;
      }
  return c;
}

MatmulGrads matmul_backward(const Tensor & dc, const Tensor & a, const Tensor & b, bool trans_a, bool trans_b,
                            double alpha) {
  // C[e,i,j] = alpha sum_p opA[e,i,p] opB[e,p,j]: each product term sends dC * alpha * (the other factor) back to
  // the element of A or B it read, which accumulates broadcast batches automatically.
  MatmulGrads grads{Tensor(a.dims), Tensor(b.dims), Tensor({dc.dim(-1)})};
  const int64_t m = trans_a ? a.dim(-1) : a.dim(-2), k = trans_a ? a.dim(-2) : a.dim(-1);
  const int64_t n = dc.dim(-1);
  const int64_t batch = dc.dims.size() == 3 ? dc.dims[0] : 1;
  auto a_index = [&](int64_t e, int64_t i, int64_t p) {
    const int64_t entry = a.dims.size() == 3 && a.dims[0] > 1 ? e : 0;
    return (entry * a.dim(-2) + (trans_a ? p : i)) * a.dim(-1) + (trans_a ? i : p);
  };
  auto b_index = [&](int64_t e, int64_t p, int64_t j) {
    const int64_t entry = b.dims.size() == 3 && b.dims[0] > 1 ? e : 0;
    return (entry * b.dim(-2) + (trans_b ? j : p)) * b.dim(-1) + (trans_b ? p : j);
  };
  for (int64_t e = 0; e < batch; ++e)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const double g = dc.v[(e * m + i) * n + j];
        grads.dbias.v[j] += g;
        for (int64_t p = 0; p < k; ++p) {
          grads.da.v[a_index(e, i, p)] += alpha * g * b.v[b_index(e, p, j)];
          grads.db.v[b_index(e, p, j)] += alpha * g * a.v[a_index(e, i, p)];
        }
      }
  return grads;
}

LayerNormOut layernorm(const Tensor & in, const Tensor & weight, const Tensor & bias, double eps) {
  const int64_t cols = in.dim(-1), rows = in.rows();
  LayerNormOut result{Tensor(in.dims), Tensor({rows}), Tensor({rows})};
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < cols; ++c) mean += in.v[r * cols + c];
    mean /= cols;
    for (int64_t c = 0; c < cols; ++c) var += (in.v[r * cols + c] - mean) * (in.v[r * cols + c] - mean);
    var /= cols;  // biased, as PyTorch's LayerNorm
    const double rstd = 1.0 / std::sqrt(var + eps);
    result.mean.v[r] = mean;
    result.rstd.v[r] = rstd;
    for (int64_t c = 0; c < cols; ++c)
      result.out.v[r * cols + c] = (in.v[r * cols + c] - mean) * rstd * weight.v[c] + bias.v[c];
  }
  return result;
}

LayerNormGrads layernorm_backward(const Tensor & dout, const Tensor & in, const Tensor & weight, double eps) {
  const int64_t cols = in.dim(-1), rows = in.rows();
  const Tensor zero_bias({cols});
  const LayerNormOut forward = layernorm(in, weight, zero_bias, eps);
  LayerNormGrads grads{Tensor(in.dims), Tensor({cols}), Tensor({cols})};
  for (int64_t r = 0; r < rows; ++r) {
    const double rstd = forward.rstd.v[r], mean = forward.mean.v[r];
    double mean_g = 0.0, mean_gx = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (in.v[r * cols + c] - mean) * rstd;
      const double g = dout.v[r * cols + c] * weight.v[c];
      mean_g += g;
      mean_gx += g * xhat;
      grads.dweight.v[c] += dout.v[r * cols + c] * xhat;
      grads.dbias.v[c] += dout.v[r * cols + c];
    }
    mean_g /= cols;
    mean_gx /= cols;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (in.v[r * cols + c] - mean) * rstd;
      const double g = dout.v[r * cols + c] * weight.v[c];
      grads.din.v[r * cols + c] = rstd * (g - mean_g - xhat * mean_gx);
    }
  }
  return grads;
}

Tensor gelu(const Tensor & in) {
  Tensor out(in.dims);
  for (int64_t i = 0; i < in.numel(); ++i) out.v[i] = 0.5 * in.v[i] * (1.0 + std::erf(in.v[i] / std::sqrt(2.0)));
  return out;
}

Tensor gelu_backward(const Tensor & dout, const Tensor & in) {
  Tensor din(in.dims);
  for (int64_t i = 0; i < in.numel(); ++i) {
    const double x = in.v[i];
    const double cdf = 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi);
    din.v[i] = dout.v[i] * (cdf + x * pdf);
  }
  return din;
}

Tensor quick_gelu(const Tensor & in) {
  Tensor out(in.dims);
  for (int64_t i = 0; i < in.numel(); ++i) out.v[i] = in.v[i] / (1.0 + std::exp(-1.702 * in.v[i]));
  return out;
}

Tensor quick_gelu_backward(const Tensor & dout, const Tensor & in) {
  Tensor din(in.dims);
  for (int64_t i = 0; i < in.numel(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-1.702 * in.v[i]));
    din.v[i] = dout.v[i] * (s + 1.702 * in.v[i] * s * (1.0 - s));
  }
  return din;
}

bool dropout_keeps(uint64_t seed, uint64_t index, double p) {
  return static_cast<double>(philox_uniform(seed, index)) >= p;
}

double attention_keep_factor(uint64_t seed, uint64_t row, int64_t key, int64_t keys, double p) {
  const uint64_t groups = static_cast<uint64_t>((keys + 15) / 16);
  const PhiloxBlock block = philox_block(seed, row * groups + static_cast<uint64_t>(key / 16));
  const uint32_t byte = (block.lane[(key % 16) / 4] >> (8 * (key % 4))) & 0xFFu;
  const double threshold = std::min(255.0, std::round(p * 256.0));
  return byte >= threshold ? 256.0 / (256.0 - threshold) : 0.0;
}

namespace {

// Scores, probabilities and dropout factors of one (b, h) head, full matrices.
struct HeadProbabilities {
  std::vector<double> probs;    // [Tq, Tk] softmax (0 where masked)
  std::vector<double> factors;  // [Tq, Tk] dropout keep factor (1 without dropout)
  std::vector<double> lse;      // [Tq]
};

HeadProbabilities head_probabilities(const Tensor & q, const Tensor & k, const AttentionConfig & config, int64_t b,
                                     int64_t h) {
  const int64_t heads = q.dims[1], tq = q.dims[2], dh = q.dims[3], tk = k.dims[2];
  const int64_t total_heads = config.heads_total == 0 ? heads : config.heads_total;
  HeadProbabilities head{std::vector<double>(tq * tk, 0.0), std::vector<double>(tq * tk, 1.0),
                         std::vector<double>(tq, -std::numeric_limits<double>::infinity())};
  for (int64_t i = 0; i < tq; ++i) {
    std::vector<double> scores(tk, -std::numeric_limits<double>::infinity());
    double max = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < tk; ++j) {
      if (config.causal && j > i + (tk - tq)) continue;
      double dot = 0.0;
      for (int64_t d = 0; d < dh; ++d)
        dot += q.v[((b * heads + h) * tq + i) * dh + d] * k.v[((b * heads + h) * tk + j) * dh + d];
      scores[j] = dot * config.scale;
      max = std::max(max, scores[j]);
    }
    if (max == -std::numeric_limits<double>::infinity()) continue;  // no visible key: zero output
    double sum = 0.0;
    for (int64_t j = 0; j < tk; ++j) sum += std::isinf(scores[j]) ? 0.0 : std::exp(scores[j] - max);
    head.lse[i] = max + std::log(sum);
    for (int64_t j = 0; j < tk; ++j) {
      head.probs[i * tk + j] = std::isinf(scores[j]) ? 0.0 : std::exp(scores[j] - head.lse[i]);
      if (config.dropout_p > 0.0) {
        const uint64_t row = config.first_row + static_cast<uint64_t>((b * total_heads + config.head_start + h) * tq + i);
        head.factors[i * tk + j] = attention_keep_factor(config.seed, row, j, tk, config.dropout_p);
      }
    }
  }
  return head;
}

}  // namespace

AttentionOut attention(const Tensor & q, const Tensor & k, const Tensor & v, const AttentionConfig & config) {
  const int64_t batch = q.dims[0], heads = q.dims[1], tq = q.dims[2], dh = q.dims[3], tk = k.dims[2];
  AttentionOut result{Tensor(q.dims), Tensor({batch, heads, tq})};
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const HeadProbabilities head = head_probabilities(q, k, config, b, h);
      for (int64_t i = 0; i < tq; ++i) {
        result.lse.v[(b * heads + h) * tq + i] = head.lse[i];
        for (int64_t d = 0; d < dh; ++d) {
          double sum = 0.0;
          for (int64_t j = 0; j < tk; ++j)
            sum += head.probs[i * tk + j] * head.factors[i * tk + j] * v.v[((b * heads + h) * tk + j) * dh + d];
          result.out.v[((b * heads + h) * tq + i) * dh + d] = sum;
        }
      }
    }
  return result;
}

AttentionGrads attention_backward(const Tensor & dout, const Tensor & q, const Tensor & k, const Tensor & v,
                                  const AttentionConfig & config) {
  const int64_t batch = q.dims[0], heads = q.dims[1], tq = q.dims[2], dh = q.dims[3], tk = k.dims[2];
  AttentionGrads grads{Tensor(q.dims), Tensor(k.dims), Tensor(v.dims)};
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const HeadProbabilities head = head_probabilities(q, k, config, b, h);
      auto at = [&](const Tensor & t, int64_t length, int64_t row, int64_t d) {
        return t.v[((b * heads + h) * length + row) * dh + d];
      };
      for (int64_t i = 0; i < tq; ++i) {
        // dP_ij = (dO_i . V_j) * factor_ij ; dS_ij = P_ij (dP_ij - sum_l P_il dP_il)
        std::vector<double> dprobs(tk, 0.0);
        double weighted = 0.0;
        for (int64_t j = 0; j < tk; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < dh; ++d) dot += at(dout, tq, i, d) * at(v, tk, j, d);
          dprobs[j] = dot * head.factors[i * tk + j];
          weighted += head.probs[i * tk + j] * dprobs[j];
        }
        for (int64_t j = 0; j < tk; ++j) {
          const double p = head.probs[i * tk + j];
          const double dscore = p * (dprobs[j] - weighted) * config.scale;
          for (int64_t d = 0; d < dh; ++d) {
            grads.dq.v[((b * heads + h) * tq + i) * dh + d] += dscore * at(k, tk, j, d);
            grads.dk.v[((b * heads + h) * tk + j) * dh + d] += dscore * at(q, tq, i, d);
            grads.dv.v[((b * heads + h) * tk + j) * dh + d] += p * head.factors[i * tk + j] * at(dout, tq, i, d);
          }
        }
      }
    }
  return grads;
}

namespace {

// cos and sin times the xPos scale for row t of a length-T sequence at `offset`, pair i of head dim dh.
void xpos_factors(int64_t t, int64_t i, int64_t length, int64_t dh, int64_t offset, bool downscale, double scale_base,
                  double * c, double * s) {
  const int64_t total = length + offset;
  const int64_t min_position = -((total + 1) / 2);  // floor(-total / 2) for total >= 0
  const int64_t position = offset + t;
  const double zeta = (2.0 * i + 0.4 * dh) / (1.4 * dh);
  double scale = std::pow(zeta, static_cast<double>(min_position + position) / scale_base);
  if (downscale) scale = 1.0 / scale;
  const double angle = position * std::pow(10000.0, -2.0 * i / dh);
  *c = scale * std::cos(angle);
  *s = scale * std::sin(angle);
}

Tensor xpos_map(const Tensor & x, int64_t offset, bool downscale, double scale_base, double sign) {
  const int64_t rows = x.dims[0] * x.dims[1], length = x.dims[2], dh = x.dims[3];
  Tensor out(x.dims);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < length; ++t)
      for (int64_t i = 0; i < dh / 2; ++i) {
        double c, s;
        xpos_factors(t, i, length, dh, offset, downscale, scale_base, &c, &s);
        s *= sign;
        const int64_t base = (r * length + t) * dh + 2 * i;
        const double a = x.v[base], b = x.v[base + 1];
        out.v[base] = a * c - b * s;
        out.v[base + 1] = b * c + a * s;
      }
  return out;
}

}  // namespace

Tensor xpos(const Tensor & x, int64_t offset, bool downscale, double scale_base) {
  return xpos_map(x, offset, downscale, scale_base, 1.0);
}

Tensor xpos_backward(const Tensor & dout, int64_t offset, bool downscale, double scale_base) {
  return xpos_map(dout, offset, downscale, scale_base, -1.0);  // the rotation's transpose
}

Tensor embedding(const std::vector<int32_t> & ids, const Tensor & table, int64_t vocab_start) {
  const int64_t width = table.dim(1), rows = table.dim(0), count = static_cast<int64_t>(ids.size());
  Tensor out({count, width});
  for (int64_t n = 0; n < count; ++n) {
    const int64_t row = ids[n] - vocab_start;
    if (row < 0 || row >= rows) continue;
    for (int64_t d = 0; d < width; ++d) out.v[n * width + d] = table.v[row * width + d];
  }
  return out;
}

Tensor embedding_backward(const Tensor & dout, const std::vector<int32_t> & ids, int64_t table_rows,
                          int64_t vocab_start, int64_t padding_idx) {
  const int64_t width = dout.dim(1), count = static_cast<int64_t>(ids.size());
  Tensor dtable({table_rows, width});
  for (int64_t n = 0; n < count; ++n) {
    const int64_t row = ids[n] - vocab_start;
    if (row < 0 || row >= table_rows || ids[n] == padding_idx) continue;
    for (int64_t d = 0; d < width; ++d) dtable.v[row * width + d] += dout.v[n * width + d];
  }
  return dtable;
}

Tensor sinusoidal_positions(const std::vector<int32_t> & positions, int64_t width, int64_t padding_idx) {
  const int64_t half = width / 2, count = static_cast<int64_t>(positions.size());
  Tensor out({count, width});
  for (int64_t n = 0; n < count; ++n) {
    if (positions[n] == padding_idx) continue;
    for (int64_t j = 0; j < half; ++j) {
      const double frequency = std::exp(-static_cast<double>(j) * std::log(10000.0) / (half - 1));
      out.v[n * width + j] = std::sin(positions[n] * frequency);
      out.v[n * width + half + j] = std::cos(positions[n] * frequency);
    }
  }
  return out;
}

CrossEntropyOut cross_entropy(const Tensor & logits, const std::vector<int32_t> & targets, const Tensor & weights,
                              int64_t vocab_start, double loss_scale) {
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  CrossEntropyOut result{0.0, Tensor({rows})};
  for (int64_t n = 0; n < rows; ++n) {
    double max = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < vocab; ++c) max = std::max(max, logits.v[n * vocab + c]);
    double sum = 0.0;
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(logits.v[n * vocab + c] - max);
    result.lse.v[n] = max + std::log(sum);
    const int64_t local = targets[n] - vocab_start;
    const double picked = local >= 0 && local < vocab ? logits.v[n * vocab + local] : 0.0;
    if (weights.v[n] != 0.0) result.loss += weights.v[n] * (result.lse.v[n] - picked);
  }
  result.loss *= loss_scale;
  return result;
}

Tensor cross_entropy_backward(const Tensor & logits, const std::vector<int32_t> & targets, const Tensor & weights,
                              int64_t vocab_start, double loss_scale, double dloss) {
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  const CrossEntropyOut forward = cross_entropy(logits, targets, weights, vocab_start, loss_scale);
  Tensor dlogits(logits.dims);
  for (int64_t n = 0; n < rows; ++n) {
    const double factor = dloss * loss_scale * weights.v[n];
    for (int64_t c = 0; c < vocab; ++c)
      dlogits.v[n * vocab + c] = factor * std::exp(logits.v[n * vocab + c] - forward.lse.v[n]);
    const int64_t local = targets[n] - vocab_start;
    if (local >= 0 && local < vocab) dlogits.v[n * vocab + local] -= factor;
  }
  return dlogits;
}

Tensor dropout(const Tensor & in, double p, uint64_t seed, uint64_t offset) {
  Tensor out(in.dims);
  for (int64_t i = 0; i < in.numel(); ++i)
    out.v[i] = dropout_keeps(seed, offset + static_cast<uint64_t>(i), p) ? in.v[i] / (1.0 - p) : 0.0;
  return out;
}

AdamWState adamw_step(const AdamWState & state, const Tensor & grad, double lr, double beta1, double beta2,
                      double eps, double weight_decay, int64_t step, double grad_scale) {
  AdamWState next = state;
  const double correction1 = 1.0 - std::pow(beta1, step), correction2 = 1.0 - std::pow(beta2, step);
  for (int64_t i = 0; i < grad.numel(); ++i) {
    const double g = grad.v[i] * grad_scale;
    next.m.v[i] = beta1 * state.m.v[i] + (1.0 - beta1) * g;
    next.v.v[i] = beta2 * state.v.v[i] + (1.0 - beta2) * g * g;
    const double param = state.param.v[i] * (1.0 - lr * weight_decay);
    next.param.v[i] = param - lr * (next.m.v[i] / correction1) / (std::sqrt(next.v.v[i] / correction2) + eps);
  }
  return next;
}

double squared_norm(const Tensor & in) {
  double sum = 0.0;
  for (double x : in.v) sum += x * x;
  return sum;
}

L2NormalizeOut l2_normalize(const Tensor & in, double eps) {
  const int64_t cols = in.dim(-1), rows = in.rows();
  L2NormalizeOut result{Tensor(in.dims), Tensor({rows})};
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += in.v[r * cols + c] * in.v[r * cols + c];
    result.norm.v[r] = std::sqrt(sum);
    for (int64_t c = 0; c < cols; ++c) result.out.v[r * cols + c] = in.v[r * cols + c] / std::max(std::sqrt(sum), eps);
  }
  return result;
}

Tensor l2_normalize_backward(const Tensor & dout, const Tensor & in, double eps) {
  const int64_t cols = in.dim(-1), rows = in.rows();
  Tensor din(in.dims);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += in.v[r * cols + c] * in.v[r * cols + c];
    const double norm = std::sqrt(sum);
    if (norm <= eps) {
      for (int64_t c = 0; c < cols; ++c) din.v[r * cols + c] = dout.v[r * cols + c] / eps;
      continue;
    }
    // d(x/|x|)/dx = (I - x x^T / |x|^2) / |x|
    double dot = 0.0;
    for (int64_t c = 0; c < cols; ++c) dot += in.v[r * cols + c] * dout.v[r * cols + c];
    for (int64_t c = 0; c < cols; ++c)
      din.v[r * cols + c] = (dout.v[r * cols + c] - in.v[r * cols + c] * dot / (norm * norm)) / norm;
  }
  return din;
}

}  // namespace kosmos::reference
