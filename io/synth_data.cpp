// synth_data.cpp: the scenes, their pictures and the sentences about them (synth_data.h). Every choice is a Philox
// draw keyed by (seed, document, draw), so any document can be regenerated alone.
#include "io/synth_data.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backends/error.h"
#include "backends/philox.h"
#include "io/image.h"

namespace kosmos::io {
namespace {

const char * const kColours[] = {"red", "green", "blue", "yellow", "purple", "cyan", "white", "black"};
const uint8_t kRgb[][3] = {{220, 30, 30},   {30, 180, 60},  {40, 70, 220},  {235, 220, 40},
                           {150, 50, 190},  {40, 200, 210}, {250, 250, 250}, {15, 15, 15}};
const char * const kShapes[] = {"square", "circle", "triangle"};
const char * const kPlaces[] = {"at the top left", "at the top",    "at the top right",
                                "on the left",     "in the centre", "on the right",
                                "at the bottom left", "at the bottom", "at the bottom right"};

struct Scene {
  int colour, shape, place, background;
};

// Draw `draw` of document `document`.
uint32_t pick(uint64_t seed, int64_t document, int draw, uint32_t choices) {
  return philox_bits(seed, static_cast<uint64_t>(document) * 64 + static_cast<uint64_t>(draw)) % choices;
}

Scene scene_of(uint64_t seed, int64_t document, int which) {
  const int base = 8 * which;
  return Scene{static_cast<int>(pick(seed, document, base, 8)), static_cast<int>(pick(seed, document, base + 1, 3)),
               static_cast<int>(pick(seed, document, base + 2, 9)), static_cast<int>(pick(seed, document, base + 3, 4))};
}

RgbImage draw(const Scene & scene, int64_t size) {
  RgbImage image{size, size, std::vector<uint8_t>(static_cast<size_t>(size * size * 3))};
  const uint8_t grey = static_cast<uint8_t>(96 + 24 * scene.background);
  const double cell = static_cast<double>(size) / 3.0, radius = cell * 0.4;
  const double cx = cell * (scene.place % 3 + 0.5), cy = cell * (scene.place / 3 + 0.5);
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x) {
      const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      bool inside = false;
      switch (scene.shape) {
        case 0: inside = std::fabs(dx) <= radius && std::fabs(dy) <= radius; break;
        case 1: inside = dx * dx + dy * dy <= radius * radius; break;
        case 2: inside = dy <= radius && dy >= -radius && std::fabs(dx) <= (dy + radius) * 0.5; break;
      }
      for (int c = 0; c < 3; ++c)
        image.pixels[static_cast<size_t>((y * size + x) * 3 + c)] = inside ? kRgb[scene.colour][c] : grey;
    }
  return image;
}

std::string describe(const Scene & scene) {
  return std::string("a ") + kColours[scene.colour] + " " + kShapes[scene.shape] + " " + kPlaces[scene.place] + ".";
}

}  // namespace

SynthReport write_synthetic_corpus(const SynthOptions & options) {
  namespace fs = std::filesystem;
  KOSMOS_CHECK(options.documents >= 4, "data synth: --n ", options.documents, " is too few; use at least 4 documents");
  KOSMOS_CHECK(options.image_size >= 8, "data synth: --image-size ", options.image_size, " is too small; use 8 or more");
  std::error_code error;
  fs::create_directories(fs::path(options.out) / "images", error);
  KOSMOS_CHECK(!error, "data synth: cannot create ", options.out, "/images (", error.message(),
               "); choose a writable --out");
  const auto open = [&](const char * name) {
    std::ofstream file(fs::path(options.out) / name, std::ios::trunc);
    KOSMOS_CHECK(file, "data synth: cannot write ", options.out, "/", name, "; check the folder's permissions");
    return file;
  };
  std::ofstream caption = open("caption.jsonl"), interleaved = open("interleaved.jsonl"), text = open("text.jsonl"),
                corpus = open("corpus.txt");
  SynthReport report;
  const auto picture = [&](const Scene & scene) {
    char name[32];
    std::snprintf(name, sizeof name, "images/%06ld.png", static_cast<long>(report.images++));
    write_png((fs::path(options.out) / name).string(), draw(scene, options.image_size));
    return nlohmann::json{{"image", name}};
  };
  const auto words = [&](const std::string & sentence) {
    corpus << sentence << "\n";
    return nlohmann::json{{"text", sentence}};
  };
  for (int64_t d = 0; d < options.documents; ++d) {
    const Scene first = scene_of(options.seed, d, 0), second = scene_of(options.seed, d, 1);
    nlohmann::json segments = nlohmann::json::array();
    if (d % 4 < 2) {  // image and caption
      segments.push_back(picture(first));
      segments.push_back(words(describe(first)));
      caption << segments.dump() << "\n";
      ++report.caption;
    } else if (d % 4 == 2) {  // interleaved: two pictures, their descriptions, a question and its answer
      segments.push_back(words("here are two pictures."));
      segments.push_back(picture(first));
      segments.push_back(words("the first shows " + describe(first)));
      segments.push_back(picture(second));
      segments.push_back(words("question: what colour is the " + std::string(kShapes[second.shape]) +
                               " in the second picture? answer: " + kColours[second.colour] + "."));
      interleaved << segments.dump() << "\n";
      ++report.interleaved;
    } else {  // text only
      segments.push_back(words(std::string("the ") + kShapes[first.shape] + " is " + kColours[first.colour] + "."));
      segments.push_back(words(std::string("a ") + kShapes[second.shape] + " " + kPlaces[second.place] + " is " +
                               kColours[second.colour] + ", not " + kColours[first.colour] + "."));
      text << segments.dump() << "\n";
      ++report.text;
    }
  }
  for (std::ofstream * file : {&caption, &interleaved, &text, &corpus}) {
    file->flush();
    KOSMOS_CHECK(*file, "data synth: writing into ", options.out, " failed; check the free space");
  }
  return report;
}

}  // namespace kosmos::io
