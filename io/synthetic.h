// synthetic.h: the built-in image-caption set: each sample holds one or two images of a coloured square on noise,
// each followed by a caption whose words follow from the square's colour and position, so a model that looks at
// the image can predict them. Deterministic in (seed, sample index): any rank draws any sample identically.
#pragma once

#include <cstdint>

#include "model/kosmos.h"

namespace kosmos::io {

// Sequences first_sample .. first_sample + batch - 1 of the set, laid out as kosmos-spec 8.3:
// <s> <image> [slots] </image> caption ... </s> <pad>..., with loss only on the caption words and </s>. With
// `max_images` 2, every third sample holds a second image and its caption where the length allows; with 1, every
// sample holds one (as the PyTorch peer's batches do).
model::Batch synthetic_batch(const model::KosmosConfig & config, int64_t batch, int64_t length, int64_t first_sample,
                             uint64_t seed, int max_images = 2);

}  // namespace kosmos::io
