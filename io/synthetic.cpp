// synthetic.cpp: the built-in image-caption set (see synthetic.h).
#include "io/synthetic.h"

#include <cmath>

#include "backends/error.h"
#include "backends/philox.h"

namespace kosmos::io {
namespace {

constexpr int kClasses = 8;
// Colours of the square per class (RGB in [0, 1]).
constexpr float kPalette[kClasses][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0},
                                         {1, 0, 1}, {0, 1, 1}, {1, 1, 1}, {0.5f, 0.5f, 0.5f}};

struct Caption {
  int32_t words[5];
};

// Word ids live above the special tokens; the caption says colour, corner and a fixed grammar.
Caption caption_for(int colour, int corner, int64_t vocab) {
  const int32_t base = 4, span = static_cast<int32_t>(std::max<int64_t>(vocab - 8, 16));
  auto word = [&](int32_t w) { return base + w % span; };
  return Caption{{word(0), word(1 + colour), word(9 + corner), word(13), word(14 + (colour + corner) % 4)}};
}

}  // namespace

model::Batch synthetic_batch(const model::KosmosConfig & config, int64_t batch, int64_t length, int64_t first_sample,
                             uint64_t seed, int max_images) {
  KOSMOS_CHECK(max_images == 1 || max_images == 2, "synthetic data: ", max_images,
               " images per sample at most; the set holds 1 or 2");
  const model::VisionConfig & v = config.vision;
  const model::SpecialTokens & t = config.tokens;
  const int64_t slots = config.image_slots(), size = v.image_size, per_image = v.channels * size * size;
  const int64_t segment = 1 + slots + 1 + 5;  // <image> slots </image> caption
  KOSMOS_CHECK(length >= 2 + segment, "synthetic data: sequences of ", length, " positions cannot hold one image (",
               segment, " positions with its caption) plus <s> and </s>; use --length ", 2 + segment, " or more");
  for (int64_t id : {t.bos, t.pad, t.eos, t.unk, t.image, t.image_end})
    KOSMOS_CHECK(id < 4 || id >= 4 + 22, "synthetic data: its caption words use ids 4..25, but special token id ", id,
                 " lies there; give the special tokens ids outside 4..25 (a vocabulary of at least 28)");
  KOSMOS_CHECK(config.decoder.vocab_size >= 28, "synthetic data needs a vocabulary of at least 28 ids, the model has ",
               config.decoder.vocab_size);
  model::Batch out;
  out.batch = batch, out.length = length, out.first_sample = first_sample;
  // Samples s < first_sample with s % 3 == 2 carried two images (when the length allows): the global index of this
  // batch's first image, for layout-independent dropout.
  const bool two_image_samples = max_images == 2 && length >= 2 + 2 * segment;
  out.first_image = first_sample + (two_image_samples ? first_sample / 3 : 0);
  out.tokens.assign(static_cast<size_t>(batch * length), static_cast<int32_t>(t.pad));
  out.targets.assign(out.tokens.size(), static_cast<int32_t>(t.pad));
  out.loss_weights.assign(out.tokens.size(), 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    const uint64_t sample = static_cast<uint64_t>(first_sample + b);
    const int images = (sample % 3 == 2 && two_image_samples) ? 2 : 1;  // every third sample interleaves two
    std::vector<int32_t> sequence{static_cast<int32_t>(t.bos)};
    std::vector<bool> counted{false};  // counted[i]: the prediction of sequence[i] carries a loss
    for (int image = 0; image < images; ++image) {
      const uint32_t draw = philox_bits(seed, sample * 16 + static_cast<uint64_t>(image));
      const int colour = static_cast<int>(draw % kClasses), corner = static_cast<int>((draw >> 8) % 4);
      // The image: noise, and a square of the class colour in one corner, normalised around 0.
      const size_t first_pixel = out.images.size();
      out.images.resize(first_pixel + static_cast<size_t>(per_image));
      const int64_t half = size / 2;
      for (int64_t c = 0; c < v.channels; ++c)
        for (int64_t y = 0; y < size; ++y)
          for (int64_t x = 0; x < size; ++x) {
            const bool inside = (y < half) == (corner < 2) && (x < half) == (corner % 2 == 0);
            const uint64_t index = ((sample * 4 + static_cast<uint64_t>(image)) * static_cast<uint64_t>(per_image)) +
                                   static_cast<uint64_t>((c * size + y) * size + x);
            const float noise = 0.2f * (philox_uniform(seed ^ 0x5bd1e995ull, index) - 0.5f);
            const float value = inside ? kPalette[colour][c % 3] : 0.3f;
            out.images[first_pixel + static_cast<size_t>((c * size + y) * size + x)] = (value + noise - 0.5f) / 0.25f;
          }
      out.image_slots.push_back(b * length + static_cast<int64_t>(sequence.size()) + 1);
      sequence.push_back(static_cast<int32_t>(t.image));
      counted.push_back(false);  // predicting <image>: no loss
      for (int64_t s = 0; s < slots; ++s) {
        sequence.push_back(static_cast<int32_t>(t.image));  // slot placeholders
        counted.push_back(false);
      }
      sequence.push_back(static_cast<int32_t>(t.image_end));
      counted.push_back(false);  // predicting </image>: no loss
      const Caption caption = caption_for(colour, corner, config.decoder.vocab_size);
      for (int32_t word : caption.words) {
        sequence.push_back(word);
        counted.push_back(true);
      }
    }
    sequence.push_back(static_cast<int32_t>(t.eos));
    counted.push_back(true);
    // Position i predicts sequence[i + 1], with a loss when that token is counted.
    for (size_t i = 0; i + 1 < sequence.size() && static_cast<int64_t>(i) < length; ++i) {
      const size_t row = static_cast<size_t>(b * length) + i;
      out.tokens[row] = sequence[i];
      out.targets[row] = sequence[i + 1];
      out.loss_weights[row] = counted[i + 1] ? 1.0f : 0.0f;
    }
    out.image_count += images;
  }
  return out;
}

}  // namespace kosmos::io
