// test_metrics_file.cpp: the --metrics file of a fresh run starts empty; a resumed run's keeps the lines of the steps
// up to its checkpoint, drops those after it and any line that is no step's JSON (cut short by a kill), and appends.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "backends/error.h"
#include "io/metrics_file.h"

namespace kosmos::io {
namespace {

std::vector<std::string> lines_of(const std::string & path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string step_line(int step) { return "{\"loss\":1.5,\"step\":" + std::to_string(step) + "}"; }

TEST(MetricsFile, AResumedRunKeepsTheStepsUpToItsCheckpointAndAppends) {
  const std::string path = ::testing::TempDir() + "/kosmos_metrics_resumed.jsonl";
  {
    std::ofstream out(path, std::ios::trunc);
    for (int step = 1; step <= 7; ++step) out << step_line(step) << "\n";
    out << "{\"loss\":1.5,\"st";  // the line a kill cut short
  }
  int64_t kept = -1;
  {
    std::ofstream metrics = open_metrics(path, 5, &kept);
    metrics << step_line(6) << "\n";
  }
  EXPECT_EQ(kept, 5);
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 6u);
  for (int step = 1; step <= 6; ++step) EXPECT_EQ(lines[static_cast<size_t>(step - 1)], step_line(step));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

TEST(MetricsFile, AFreshRunStartsItEmptyAndAResumedRunWithoutOneStartsOne) {
  const std::string path = ::testing::TempDir() + "/kosmos_metrics_fresh.jsonl";
  {
    std::ofstream out(path, std::ios::trunc);
    out << step_line(1) << "\n" << step_line(2) << "\n";
  }
  {
    std::ofstream metrics = open_metrics(path, 0);
    metrics << step_line(1) << "\n";
  }
  EXPECT_EQ(lines_of(path), std::vector<std::string>{step_line(1)});
  std::filesystem::remove(path);
  {
    std::ofstream metrics = open_metrics(path, 3);
    metrics << step_line(4) << "\n";
  }
  EXPECT_EQ(lines_of(path), std::vector<std::string>{step_line(4)});
}

TEST(MetricsFile, AFolderThatDoesNotExistIsAnErrorNamingIt) {
  const std::string path = ::testing::TempDir() + "/kosmos_no_such_folder/metrics.jsonl";
  try {
    open_metrics(path, 0);
    FAIL() << "opened " << path;
  } catch (const Error & error) {
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace kosmos::io
