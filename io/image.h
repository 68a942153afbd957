// image.h: images for the vision tower. PNG (libpng) and JPEG (libjpeg-turbo) decoded to 8-bit RGB, as Pillow's
// convert("RGB") gives them (grey replicated, alpha and palettes dropped); Pillow's bicubic resampling in its own
// fixed-point arithmetic; and CLIP's preprocessing as HF's CLIPImageProcessor does it (kosmos-spec 6.5): shorter
// side to 224, centre crop, /255, OpenAI mean and std, channels first.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kosmos::io {

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3] u8, row-major
};

// Decodes a PNG or JPEG file (told apart by their signatures). A missing, truncated, corrupt or unsupported file
// (CMYK JPEG, more than 2^28 pixels) is an error naming it.
RgbImage read_image(const std::string & path);
// The same from bytes in memory; `name` names them in errors.
RgbImage decode_image(const std::vector<uint8_t> & bytes, const std::string & name);
// Writes an 8-bit RGB PNG.
void write_png(const std::string & path, const RgbImage & image);

// Pillow's Image.resize(..., BICUBIC) for 8-bit RGB: separable a = -0.5 cubic kernels widened by the downscale
// factor, 22-bit fixed-point weights, the horizontal pass first, each pass rounded to 8 bits.
RgbImage resize_bicubic(const RgbImage & image, int64_t width, int64_t height);

// CLIP preprocessing into [3, size, size] f32: the shorter side resized to `size` (the longer to
// floor(size * long / short)), the centre size x size crop, x/255, then (x - mean) / std per channel.
std::vector<float> clip_preprocess(const RgbImage & image, int64_t size = 224);

}  // namespace kosmos::io
