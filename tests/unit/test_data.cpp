// test_data.cpp: the data pipeline on a small synthetic corpus. The tokenizer round-trips text and lays out its
// ids; `data prepare` keeps every document (token for token, image for image) with the loss masks of kosmos-spec
// 8.3; the loader's batches do not depend on the dp split, come back the same after a restored position, and mix
// the streams by weight; bad input stops with the file and line, or is counted with skip_bad; a damaged shard (cut
// short, or holding ids outside the vocabulary) is an error naming it.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/dataset.h"
#include "io/loader.h"
#include "io/synth_data.h"
#include "io/tokenizer.h"
#include "model/config.h"
#include "tests/test_errors.h"

namespace kosmos {
namespace {

namespace fs = std::filesystem;
using kosmos::testing::error_of;
const std::string kTokenizer = std::string(KOSMOS_DATA_DIR) + "/tokenizer/kosmos-demo.model";

std::string own_dir(const std::string & name) {
  const std::string dir = ::testing::TempDir() + "/kosmos_data_" +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" + name;
  fs::remove_all(dir);
  return dir;
}

// A tiny corpus and its prepared dataset (image size 28, 8 slots: the tiny preset's).
struct Corpus {
  std::string corpus, dataset;
  io::PrepareReport report;
  explicit Corpus(int64_t documents = 40, int64_t shard_sequences = 5) {
    corpus = own_dir("corpus");
    dataset = own_dir("dataset");
    io::write_synthetic_corpus({corpus, documents, 3, 32});
    io::PrepareOptions options;
    for (const char * stream : {"caption", "interleaved", "text"})
      options.streams.push_back({stream, corpus + "/" + stream + ".jsonl", std::string(stream) == "caption" ? 2.0 : 1.0});
    options.tokenizer = kTokenizer;
    options.out = dataset;
    options.length = 128;
    options.image_size = 28;
    options.image_slots = 8;
    options.shard_sequences = shard_sequences;
    report = io::prepare_dataset(options, nullptr);
  }
};

model::KosmosConfig tiny_for(const io::DatasetManifest & manifest) {
  return io::DataLoader::adapt_config(model::preset("tiny"), manifest);
}

TEST(Tokenizer, RoundTripsTextAndLaysOutItsIds) {
  const io::Tokenizer tokenizer(kTokenizer);
  for (const std::string text : {"a red circle at the top left.", "question: what colour is the square? answer: blue.",
                                 "the triangle is cyan, not black."}) {
    const std::vector<int32_t> ids = tokenizer.encode(text);
    for (int32_t id : ids) {
      EXPECT_GE(id, io::Tokenizer::kFirstPiece) << text;
      EXPECT_LT(id, tokenizer.mask()) << text;
    }
    EXPECT_EQ(tokenizer.decode(ids), text);
  }
  EXPECT_EQ(tokenizer.vocab_size(), tokenizer.mask() + 6);
  EXPECT_EQ(tokenizer.image(), tokenizer.mask() + 2);
  EXPECT_EQ(tokenizer.piece(tokenizer.image()), "<image>");
  EXPECT_EQ(tokenizer.decode({io::Tokenizer::kBos, tokenizer.image(), tokenizer.image_end(), io::Tokenizer::kEos}),
            "<image></image>");
  EXPECT_NE(error_of([&] { tokenizer.decode({static_cast<int32_t>(tokenizer.vocab_size())}); }).find("outside"),
            std::string::npos);
  const std::string bad = own_dir("bad.model");
  std::ofstream(bad) << "not a model";
  EXPECT_NE(error_of([&] { io::Tokenizer{bad}; }).find("not a SentencePiece model"), std::string::npos);
}

TEST(Tokenizer, TrainsOnACorpusAndLoadsTheResult) {
  const std::string corpus = own_dir("corpus");
  io::write_synthetic_corpus({corpus, 40, 5, 16});
  io::train_tokenizer(corpus + "/corpus.txt", corpus + "/trained", 40);
  const io::Tokenizer trained(corpus + "/trained.model");
  EXPECT_EQ(trained.vocab_size(), 40 - 3 + 4 + 6);  // its 3 control pieces become ours, plus <pad> and the tags
  EXPECT_EQ(trained.decode(trained.encode("a green square on the left.")), "a green square on the left.");
}

TEST(Tokenizer, AT5LayoutModelMapsItsControlPiecesOntoOurs) {
  // T5's spiece.model: <pad> 0, </s> 1, <unk> 2 and no <s>; ours stay <s> 0, <pad> 1, </s> 2, <unk> 3.
  const std::string corpus = own_dir("corpus");
  io::write_synthetic_corpus({corpus, 40, 5, 16});
  ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train(
                  "--input=" + corpus + "/corpus.txt --model_prefix=" + corpus + "/t5 --vocab_size=40 "
                  "--model_type=unigram --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --minloglevel=2 --num_threads=1")
                  .ok());
  const io::Tokenizer t5(corpus + "/t5.model");
  EXPECT_EQ(t5.piece(io::Tokenizer::kPad), "<pad>");
  EXPECT_EQ(t5.vocab_size(), 40 - 3 + 4 + 6);
  const std::vector<int32_t> ids = t5.encode("a blue circle.");
  for (int32_t id : ids) EXPECT_GE(id, io::Tokenizer::kFirstPiece);
  EXPECT_EQ(t5.decode(ids), "a blue circle.");
}

TEST(DataPrepare, KeepsEveryDocumentWithTheSpecLossMasks) {
  const Corpus corpus;
  const io::Tokenizer tokenizer(kTokenizer);
  // What the corpus holds, counted from the JSONL directly.
  int64_t documents = 0, images = 0, text_tokens = 0;
  for (const char * stream : {"caption", "interleaved", "text"}) {
    std::ifstream in(corpus.corpus + "/" + stream + ".jsonl");
    for (std::string line; std::getline(in, line); ++documents)
      for (const nlohmann::json & segment : nlohmann::json::parse(line)) {
        if (segment.contains("image")) ++images;
        else text_tokens += static_cast<int64_t>(tokenizer.encode(segment["text"].get<std::string>()).size());
      }
  }
  EXPECT_EQ(corpus.report.documents, documents);
  EXPECT_EQ(corpus.report.skipped, 0);
  EXPECT_EQ(corpus.report.images, images);
  EXPECT_EQ(corpus.report.tokens, text_tokens + images * (8 + 2) + 2 * documents);  // + <s> and </s> each
  // Every sequence through the loader, one epoch of each stream: the loss counts every text token and </s>.
  const io::DatasetManifest manifest = io::DatasetManifest::read(corpus.dataset);
  int64_t sequences = 0;
  for (const io::StreamInfo & stream : manifest.streams) sequences += stream.sequences;
  EXPECT_EQ(sequences, corpus.report.sequences);
  EXPECT_GT(manifest.streams[1].shards.size(), 1u) << "10 interleaved documents, 5 sequences per shard";
}

TEST(DataPrepare, LossMasksFollowSpec83) {
  const Corpus corpus;
  const io::DatasetManifest manifest = io::DatasetManifest::read(corpus.dataset);
  io::DataLoader loader(corpus.dataset, tiny_for(manifest), 1);
  const std::vector<model::Batch> step = loader.next_step(16, 0, 1, 1);
  const model::Batch & batch = step[0];
  int64_t image_tokens = 0;
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    const int32_t target = batch.targets[i];
    const bool special = target == manifest.image || target == manifest.image_end || target == manifest.bos ||
                         target == manifest.pad;
    EXPECT_EQ(batch.loss_weights[i], special ? 0.0f : 1.0f) << "position " << i << " predicts " << target;
    if (i + 1 < batch.tokens.size() && i % 128 != 127 && batch.tokens[i + 1] != manifest.pad) {
      EXPECT_EQ(batch.targets[i], batch.tokens[i + 1]) << i;
    }
    if (batch.tokens[i] == manifest.image) ++image_tokens;
  }
  EXPECT_EQ(image_tokens, batch.image_count * (1 + 8));
  EXPECT_EQ(static_cast<int64_t>(batch.images.size()), batch.image_count * 3 * 28 * 28);
}

TEST(DataLoader, BatchesDoNotDependOnTheDpSplitAndResumeExactly) {
  const Corpus corpus;
  const io::DatasetManifest manifest = io::DatasetManifest::read(corpus.dataset);
  const model::KosmosConfig config = tiny_for(manifest);
  io::DataLoader whole(corpus.dataset, config, 7), rank0(corpus.dataset, config, 7), rank1(corpus.dataset, config, 7);
  std::string saved;
  std::vector<model::Batch> after_save;
  for (int step = 0; step < 12; ++step) {  // several epochs of every stream
    const std::vector<model::Batch> all = whole.next_step(8, 0, 1, 2);
    const std::vector<model::Batch> first = rank0.next_step(8, 0, 2, 2), second = rank1.next_step(8, 1, 2, 2);
    std::vector<int32_t> joined;
    for (const auto * part : {&first, &second})
      for (const model::Batch & b : *part) joined.insert(joined.end(), b.tokens.begin(), b.tokens.end());
    std::vector<int32_t> expected;
    for (const model::Batch & b : all) expected.insert(expected.end(), b.tokens.begin(), b.tokens.end());
    EXPECT_EQ(joined, expected) << "step " << step;
    EXPECT_EQ(first[0].first_image, all[0].first_image);
    EXPECT_EQ(second[0].first_image, all[1].first_image) << "step " << step;
    if (step == 5) saved = whole.position_json();
    if (step == 6) after_save = all;
  }
  io::DataLoader resumed(corpus.dataset, config, 7);
  resumed.restore(saved);
  const std::vector<model::Batch> again = resumed.next_step(8, 0, 1, 2);
  for (size_t m = 0; m < again.size(); ++m) {
    EXPECT_EQ(again[m].tokens, after_save[m].tokens);
    EXPECT_EQ(again[m].images, after_save[m].images);
    EXPECT_EQ(again[m].first_sample, after_save[m].first_sample);
  }
  io::DataLoader other_seed(corpus.dataset, config, 8);
  EXPECT_NE(other_seed.next_step(8, 0, 1, 1)[0].tokens, io::DataLoader(corpus.dataset, config, 7).next_step(8, 0, 1, 1)[0].tokens);
}

TEST(DataLoader, MixesTheStreamsByWeight) {
  const Corpus corpus;
  const io::DatasetManifest manifest = io::DatasetManifest::read(corpus.dataset);
  io::DataLoader loader(corpus.dataset, tiny_for(manifest), 3);
  for (int step = 0; step < 50; ++step) loader.next_step(40, 0, 1, 1);
  const nlohmann::json taken = nlohmann::json::parse(loader.position_json())["dataset"]["taken"];
  const double total = 2000.0;  // weights 2 : 1 : 1
  EXPECT_NEAR(taken["caption"].get<double>() / total, 0.5, 0.04);
  EXPECT_NEAR(taken["interleaved"].get<double>() / total, 0.25, 0.04);
  EXPECT_NEAR(taken["text"].get<double>() / total, 0.25, 0.04);
}

TEST(DataPrepare, BadInputStopsWithFileAndLineOrIsCountedWithSkipBad) {
  const std::string dir = own_dir("bad");
  fs::create_directories(dir);
  io::write_synthetic_corpus({dir + "/corpus", 8, 1, 16});
  const std::string good_image = "corpus/images/000000.png";
  std::ofstream(dir + "/broken.png") << "\x89PNG\r\n\x1a\n this is not the rest of a PNG";
  struct Case {
    std::string line, expect;
  };
  const std::vector<Case> cases = {
      {"{not json", "not valid JSON"},
      {R"([{"text": "a"}, {"video": "x.mp4"}])", "segment 1"},
      {R"([{"image": "missing.png"}])", "missing.png"},
      {R"([{"image": "broken.png"}])", "broken.png"},
      {R"([{"text": ")" + std::string(400, 'a') + " " + std::string(400, 'b') + R"("}])", "more than a sequence"},
  };
  for (const Case & bad : cases) {
    {
      std::ofstream jsonl(dir + "/stream.jsonl", std::ios::trunc);
      jsonl << R"([{"image": ")" << good_image << R"("}, {"text": "a red square."}])" << "\n" << bad.line << "\n";
    }
    io::PrepareOptions options;
    options.streams = {{"caption", dir + "/stream.jsonl", 1.0}};
    options.tokenizer = kTokenizer;
    options.out = dir + "/out";
    options.length = 64;
    options.image_size = 28;
    options.image_slots = 8;
    const std::string message = error_of([&] { io::prepare_dataset(options, nullptr); });
    EXPECT_NE(message.find("stream.jsonl:2"), std::string::npos) << message;
    EXPECT_NE(message.find(bad.expect), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(dir + "/out/manifest.json")) << "a failed prepare leaves no manifest";
    options.skip_bad = true;
    const io::PrepareReport report = io::prepare_dataset(options, nullptr);
    EXPECT_EQ(report.documents, 1);
    EXPECT_EQ(report.skipped, 1);
    ASSERT_EQ(report.skipped_reasons.size(), 1u);
    EXPECT_NE(report.skipped_reasons[0].find(bad.expect), std::string::npos);
  }
}

TEST(DataLoader, ADamagedShardIsAnErrorNamingIt) {
  const Corpus corpus(40, 1000);
  const io::DatasetManifest manifest = io::DatasetManifest::read(corpus.dataset);
  const std::string shard = corpus.dataset + "/" + manifest.streams[0].shards[0].file;
  fs::resize_file(shard, fs::file_size(shard) / 2);
  io::DataLoader loader(corpus.dataset, tiny_for(manifest), 1);
  std::string message;
  for (int step = 0; step < 4 && message.empty(); ++step)
    message = error_of([&] { loader.next_step(8, 0, 1, 1); });
  EXPECT_NE(message.find(shard), std::string::npos) << message;
  model::KosmosConfig wrong = tiny_for(manifest);
  wrong.vision.image_size = 56;
  EXPECT_NE(error_of([&] { io::DataLoader(corpus.dataset, wrong, 1); }).find("--image-size 56"), std::string::npos);
  EXPECT_NE(error_of([&] { io::DatasetManifest::read(corpus.dataset + "/nothing"); }).find("kosmos data prepare"),
            std::string::npos);
}

// An id outside the vocabulary (a GPU would index its tables with it unchecked) stops the loader, naming the shard.
TEST(DataLoader, AnIdOutsideTheVocabularyIsAnErrorNamingTheShard) {
  for (const char * table : {"/targets", "/tokens"}) {
    const Corpus damaged(40, 1000);
    const io::DatasetManifest manifest = io::DatasetManifest::read(damaged.dataset);
    const std::string shard = manifest.streams[0].shards[0].file;
    const hid_t file = H5Fopen((damaged.dataset + "/" + shard).c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const hid_t data = H5Dopen2(file, table, H5P_DEFAULT);
    const hid_t space = H5Dget_space(data);
    hsize_t rows_columns[2];
    H5Sget_simple_extent_dims(space, rows_columns, nullptr);
    const int32_t outside = static_cast<int32_t>(manifest.vocab_size) + 7;
    const std::vector<int32_t> row(rows_columns[1], outside);  // every row of the shard: whichever the loader reads
    for (hsize_t r = 0; r < rows_columns[0]; ++r) {
      const hsize_t start[2] = {r, 0}, count[2] = {1, rows_columns[1]};
      H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
      const hid_t memory = H5Screate_simple(1, &rows_columns[1], nullptr);
      ASSERT_GE(H5Dwrite(data, H5T_NATIVE_INT32, memory, space, H5P_DEFAULT, row.data()), 0);
      H5Sclose(memory);
    }
    H5Sclose(space);
    H5Dclose(data);
    H5Fclose(file);
    io::DataLoader loader(damaged.dataset, tiny_for(manifest), 1);
    std::string message;
    for (int step = 0; step < 4 && message.empty(); ++step)
      message = error_of([&] { loader.next_step(8, 0, 1, 1); });
    EXPECT_NE(message.find(shard), std::string::npos) << table << ": " << message;
    EXPECT_NE(message.find(std::to_string(outside)), std::string::npos) << table << ": " << message;
    EXPECT_NE(message.find("prepare the dataset again"), std::string::npos) << table << ": " << message;
  }
}

}  // namespace
}  // namespace kosmos
