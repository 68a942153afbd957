// test_synthetic.cpp: the built-in synthetic image-caption batches: every third sample holds two images where the
// length allows, or each holds one when asked (as the PyTorch peer's batches do), with the images' global index
// following either way.
#include <gtest/gtest.h>

#include "backends/error.h"
#include "io/synthetic.h"
#include "model/config.h"

namespace kosmos {
namespace {

int64_t image_tokens(const model::Batch & batch, int64_t image_id) {
  int64_t count = 0;
  for (int32_t token : batch.tokens) count += token == image_id;
  return count;
}

TEST(SyntheticBatches, EveryThirdSampleHoldsTwoImagesOrEachOneWhenAsked) {
  const model::KosmosConfig config = model::preset("tiny");
  const int64_t segment = 1 + config.image_slots() + 1 + 5;  // <image> slots </image> caption
  const int64_t length = 2 + 2 * segment;                     // room for two
  const model::Batch mixed = io::synthetic_batch(config, 6, length, 0, 1);
  EXPECT_EQ(mixed.image_count, 8) << "samples 2 and 5 hold two images";
  EXPECT_EQ(image_tokens(mixed, config.tokens.image), 8 * (1 + config.image_slots()));
  const model::Batch single = io::synthetic_batch(config, 6, length, 0, 1, 1);
  EXPECT_EQ(single.image_count, 6);
  EXPECT_EQ(image_tokens(single, config.tokens.image), 6 * (1 + config.image_slots()));
  EXPECT_EQ(static_cast<int64_t>(single.images.size()),
            6 * config.vision.channels * config.vision.image_size * config.vision.image_size);
  // The first image of samples 7 on: 7 before it with one image each, 9 with every third holding two.
  EXPECT_EQ(io::synthetic_batch(config, 2, length, 7, 1, 1).first_image, 7);
  EXPECT_EQ(io::synthetic_batch(config, 2, length, 7, 1).first_image, 9);
  EXPECT_THROW(io::synthetic_batch(config, 1, length, 0, 1, 3), Error);
}

}  // namespace
}  // namespace kosmos
