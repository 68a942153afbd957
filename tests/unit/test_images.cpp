// test_images.cpp: image decoding and CLIP preprocessing against HF's CLIPImageProcessor on real photographs
// (fixtures from tests/images/make_image_fixtures.py): mean absolute difference per value at most 1/255 of each
// channel's normalised range. Damaged or missing images are errors naming the file; a written PNG reads back.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/image.h"
#include "io/npy.h"
#include "tests/test_errors.h"

namespace kosmos {
namespace {

using kosmos::testing::error_of;
const std::string kImages = KOSMOS_IMAGES_DIR;

class ClipParity : public ::testing::TestWithParam<const char *> {};

TEST_P(ClipParity, MatchesHfClipImageProcessor) {
  const std::string path = kImages + "/" + GetParam();
  const io::NpyArray expected = io::read_npy(path + ".clip.npy");
  ASSERT_EQ(expected.shape, (std::vector<int64_t>{3, 224, 224}));
  const std::vector<float> ours = io::clip_preprocess(io::read_image(path));
  ASSERT_EQ(ours.size(), expected.values.size());
  const double kStd[3] = {0.26862954, 0.26130258, 0.27577711};
  for (int c = 0; c < 3; ++c) {
    double total = 0.0, largest = 0.0;
    const size_t plane = 224 * 224;
    for (size_t i = c * plane; i < (c + 1) * plane; ++i) {
      const double difference = std::fabs(static_cast<double>(ours[i]) - expected.values[i]);
      total += difference;
      largest = std::max(largest, difference);
    }
    const double mean = total / plane, bound = 1.0 / (255.0 * kStd[c]);
    EXPECT_LE(mean, bound) << GetParam() << " channel " << c << ": largest difference " << largest;
    RecordProperty(std::string("channel") + std::to_string(c) + "_mean_abs_difference", std::to_string(mean));
  }
}

INSTANTIATE_TEST_SUITE_P(Photographs, ClipParity, ::testing::Values("chelsea.png", "rocket.jpg", "camera.png"),
                         [](const auto & info) {
                           std::string name = info.param;
                           for (char & c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

std::vector<uint8_t> file_bytes(const std::string & path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(Images, DamagedOrMissingImagesAreErrorsNamingTheFile) {
  for (const char * name : {"chelsea.png", "rocket.jpg"}) {
    std::vector<uint8_t> bytes = file_bytes(kImages + "/" + name);
    const std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 3));
    const std::string message = error_of([&] { io::decode_image(truncated, std::string("cut_") + name); });
    EXPECT_NE(message.find(std::string("cut_") + name), std::string::npos) << message;
    EXPECT_NE(message.find("cannot decode"), std::string::npos) << message;
  }
  std::vector<uint8_t> text = {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'};
  EXPECT_NE(error_of([&] { io::decode_image(text, "notes.jpg"); }).find("neither PNG nor JPEG"), std::string::npos);
  const std::string missing = error_of([&] { io::read_image(kImages + "/missing.png"); });
  EXPECT_NE(missing.find("missing.png"), std::string::npos) << missing;
}

TEST(Images, AWrittenPngReadsBackAndGreyBecomesRgb) {
  io::RgbImage image{5, 3, {}};
  for (int i = 0; i < 5 * 3 * 3; ++i) image.pixels.push_back(static_cast<uint8_t>(i * 5));
  const std::string path = ::testing::TempDir() + "/kosmos_written.png";
  io::write_png(path, image);
  const io::RgbImage back = io::read_image(path);
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.height, 3);
  EXPECT_EQ(back.pixels, image.pixels);
  const io::RgbImage grey = io::read_image(kImages + "/camera.png");  // an 8-bit greyscale PNG
  EXPECT_EQ(grey.pixels[0], grey.pixels[1]);
  EXPECT_EQ(grey.pixels[1], grey.pixels[2]);
}

}  // namespace
}  // namespace kosmos
