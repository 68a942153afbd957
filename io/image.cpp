// image.cpp: PNG and JPEG decoding, PNG writing, Pillow's bicubic resampling and CLIP's preprocessing (image.h).
// libpng and libjpeg report errors by longjmp: each decoder keeps every C++ object it owns outside the jump's
// span (created before setjmp) and turns the library's message into a kosmos::Error after it.
#include "io/image.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "backends/error.h"

namespace kosmos::io {
namespace {

constexpr int64_t kMaxPixels = int64_t{1} << 28;

// ---- PNG ----

struct PngSource {
  const uint8_t * data;
  size_t size, offset;
  char message[256];
};

void png_read_bytes(png_structp png, png_bytep out, png_size_t count) {
  PngSource & source = *static_cast<PngSource *>(png_get_io_ptr(png));
  if (source.offset + count > source.size) png_error(png, "the file ends early (truncated)");
  std::memcpy(out, source.data + source.offset, count);
  source.offset += count;
}

void png_fail(png_structp png, png_const_charp message) {
  PngSource & source = *static_cast<PngSource *>(png_get_error_ptr(png));
  std::snprintf(source.message, sizeof source.message, "%s", message);
  png_longjmp(png, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

// Fills `image` or returns false with the reason in source.message.
bool decode_png(PngSource & source, RgbImage & image) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_ignore_warning);
  if (!png) {
    std::snprintf(source.message, sizeof source.message, "libpng is out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &source, png_read_bytes);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (static_cast<int64_t>(width) * height > kMaxPixels) png_error(png, "more than 2^28 pixels");
  // As Pillow's convert("RGB"): palettes expanded, grey replicated, 16 bits to their high byte, alpha dropped.
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8) png_error(png, "unsupported PNG layout");
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = image.pixels.data() + static_cast<size_t>(y) * width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// ---- JPEG ----

struct JpegFailure {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr info) {
  JpegFailure & failure = *reinterpret_cast<JpegFailure *>(info->err);
  (*info->err->format_message)(info, failure.message);
  std::longjmp(failure.jump, 1);
}

// Corrupt data (level -1: "premature end of data", bad Huffman codes) is a failure, not a warning: an image
// decoded from damaged bytes would silently train on grey blocks.
void jpeg_message(j_common_ptr info, int level) {
  if (level < 0) jpeg_fail(info);
}

bool decode_jpeg(const std::vector<uint8_t> & bytes, RgbImage & image, JpegFailure & failure) {
  jpeg_decompress_struct info;
  info.err = jpeg_std_error(&failure.manager);
  failure.manager.error_exit = jpeg_fail;
  failure.manager.emit_message = jpeg_message;
  if (setjmp(failure.jump)) {
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
    std::snprintf(failure.message, sizeof failure.message, "CMYK JPEGs are not supported; convert it to RGB");
    jpeg_destroy_decompress(&info);
    return false;
  }
  info.out_color_space = JCS_RGB;  // Pillow's defaults otherwise: islow DCT, fancy upsampling
  jpeg_start_decompress(&info);
  if (static_cast<int64_t>(info.output_width) * info.output_height > kMaxPixels) {
    std::snprintf(failure.message, sizeof failure.message, "more than 2^28 pixels");
    jpeg_destroy_decompress(&info);
    return false;
  }
  image.width = info.output_width;
  image.height = info.output_height;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = image.pixels.data() + static_cast<size_t>(info.output_scanline) * image.width * 3;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}

// ---- Pillow's resampling ----

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {  // a = -0.5
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// For each output position: the first input index, the count, and fixed-point weights (Pillow's
// precompute_coeffs and normalize_coeffs_8bpc).
struct Kernels {
  int64_t size = 0;                // weights per output position
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;    // [out, size]
};

Kernels kernels_for(int64_t in, int64_t out) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  Kernels k;
  k.size = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  k.first.resize(static_cast<size_t>(out));
  k.count.resize(static_cast<size_t>(out));
  k.weights.assign(static_cast<size_t>(out * k.size), 0);
  std::vector<double> raw(static_cast<size_t>(k.size));
  for (int64_t o = 0; o < out; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    const int64_t first = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t last = std::min<int64_t>(in, static_cast<int64_t>(center + support + 0.5));
    const int64_t count = last - first;
    double total = 0.0;
    for (int64_t x = 0; x < count; ++x) {
      raw[static_cast<size_t>(x)] = bicubic((static_cast<double>(x + first) - center + 0.5) / filter_scale);
      total += raw[static_cast<size_t>(x)];
    }
    for (int64_t x = 0; x < count; ++x) {
      const double w = total != 0.0 ? raw[static_cast<size_t>(x)] / total : raw[static_cast<size_t>(x)];
      const double fixed = w * static_cast<double>(1 << kPrecisionBits);
      k.weights[static_cast<size_t>(o * k.size + x)] = static_cast<int32_t>(w < 0 ? std::trunc(-0.5 + fixed)
                                                                                 : std::trunc(0.5 + fixed));
    }
    k.first[static_cast<size_t>(o)] = first;
    k.count[static_cast<size_t>(o)] = count;
  }
  return k;
}

uint8_t clip8(int32_t sum) {
  if (sum >= (1 << kPrecisionBits << 8)) return 255;
  if (sum <= 0) return 0;
  return static_cast<uint8_t>(sum >> kPrecisionBits);
}

// One pass along rows (horizontal) or columns (vertical), 8-bit in and out.
RgbImage resample_pass(const RgbImage & in, int64_t out_size, bool horizontal) {
  const int64_t in_size = horizontal ? in.width : in.height;
  const Kernels k = kernels_for(in_size, out_size);
  RgbImage out;
  out.width = horizontal ? out_size : in.width;
  out.height = horizontal ? in.height : out_size;
  out.pixels.resize(static_cast<size_t>(out.width * out.height * 3));
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x) {
      const int64_t o = horizontal ? x : y;
      const int32_t * weights = k.weights.data() + o * k.size;
      int32_t sums[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
      for (int64_t i = 0; i < k.count[static_cast<size_t>(o)]; ++i) {
        const int64_t source = k.first[static_cast<size_t>(o)] + i;
        const uint8_t * pixel = in.pixels.data() + ((horizontal ? y * in.width + source : source * in.width + x) * 3);
        for (int c = 0; c < 3; ++c) sums[c] += pixel[c] * weights[i];
      }
      uint8_t * target = out.pixels.data() + (y * out.width + x) * 3;
      for (int c = 0; c < 3; ++c) target[c] = clip8(sums[c]);
    }
  return out;
}

}  // namespace

RgbImage decode_image(const std::vector<uint8_t> & bytes, const std::string & name) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  RgbImage image;
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) {
    PngSource source{bytes.data(), bytes.size(), 0, {0}};
    KOSMOS_CHECK(decode_png(source, image), "image ", name, ": cannot decode this PNG (", source.message,
                 "); replace or remove the file, or pass --skip-bad to count and skip such samples");
    return image;
  }
  if (bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) {
    JpegFailure failure{};
    KOSMOS_CHECK(decode_jpeg(bytes, image, failure), "image ", name, ": cannot decode this JPEG (", failure.message,
                 "); replace or remove the file, or pass --skip-bad to count and skip such samples");
    return image;
  }
  KOSMOS_FAIL("image ", name, ": neither PNG nor JPEG (", bytes.size(), " bytes, no PNG or JPEG signature); convert it ",
              "to one of those");
}

RgbImage read_image(const std::string & path) {
  std::ifstream in(path, std::ios::binary);
  KOSMOS_CHECK(in, "image ", path, ": cannot open it; check the path (relative image paths are taken from the "
               "folder of the JSONL file that names them)");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_image(bytes, path);
}

void write_png(const std::string & path, const RgbImage & image) {
  KOSMOS_CHECK(image.width > 0 && image.height > 0 &&
                   static_cast<int64_t>(image.pixels.size()) == image.width * image.height * 3,
               "write_png ", path, ": ", image.width, " x ", image.height, " RGB needs ", image.width * image.height * 3,
               " bytes, got ", image.pixels.size(), " (internal error)");
  png_image writer;
  std::memset(&writer, 0, sizeof writer);
  writer.version = PNG_IMAGE_VERSION;
  writer.width = static_cast<png_uint_32>(image.width);
  writer.height = static_cast<png_uint_32>(image.height);
  writer.format = PNG_FORMAT_RGB;
  const int written = png_image_write_to_file(&writer, path.c_str(), 0, image.pixels.data(), 0, nullptr);
  const std::string reason = writer.message;
  png_image_free(&writer);
  KOSMOS_CHECK(written, "write_png ", path, ": ", reason, "; check that the folder exists and is writable");
}

RgbImage resize_bicubic(const RgbImage & image, int64_t width, int64_t height) {
  KOSMOS_CHECK(width > 0 && height > 0 && image.width > 0 && image.height > 0, "resize_bicubic: ", image.width, " x ",
               image.height, " to ", width, " x ", height, ": sizes must be positive");
  // Pillow skips a pass whose size does not change.
  RgbImage across = image.width == width ? image : resample_pass(image, width, true);
  return across.height == height ? across : resample_pass(across, height, false);
}

std::vector<float> clip_preprocess(const RgbImage & image, int64_t size) {
  // HF's get_resize_output_image_size(shortest_edge=size): int(size * long / short) for the longer side.
  const bool wide = image.width >= image.height;
  const int64_t shorter = wide ? image.height : image.width, longer = wide ? image.width : image.height;
  const int64_t resized_long =
      static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(longer) / static_cast<double>(shorter));
  const RgbImage resized = resize_bicubic(image, wide ? resized_long : size, wide ? size : resized_long);
  const int64_t top = (resized.height - size) / 2, left = (resized.width - size) / 2;
  static const float kMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  static const float kStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  std::vector<float> pixels(static_cast<size_t>(3 * size * size));
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const uint8_t value = resized.pixels[static_cast<size_t>(((top + y) * resized.width + left + x) * 3 + c)];
        const float scaled = static_cast<float>(value * (1.0 / 255.0));  // HF rescales in f64, then casts
        pixels[static_cast<size_t>((c * size + y) * size + x)] = (scaled - kMean[c]) / kStd[c];
      }
  return pixels;
}

}  // namespace kosmos::io
