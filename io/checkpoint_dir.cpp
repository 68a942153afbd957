// checkpoint_dir.cpp: naming, publishing, pruning and finding the checkpoints of a run (see checkpoint_dir.h).
#include "io/checkpoint_dir.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "backends/error.h"

namespace kosmos::io {
namespace {

namespace fs = std::filesystem;

// The complete checkpoints of a folder by step (step_*.h5; partial files are not complete).
std::map<int64_t, fs::path> complete_checkpoints(const fs::path & dir) {
  std::map<int64_t, fs::path> found;
  std::error_code error;
  for (const fs::directory_entry & entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    int64_t step = 0;
    char tail = 0;
    if (std::sscanf(name.c_str(), "step_%ld.h5%c", &step, &tail) == 1 && name.size() > 8 &&
        name.compare(name.size() - 3, 3, ".h5") == 0)
      found[step] = entry.path();
  }
  return found;
}

}  // namespace

std::string checkpoint_path(const std::string & dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08ld.h5", static_cast<long>(step));
  return (fs::path(dir) / name).string();
}

std::string partial_path(const std::string & final_path) { return final_path + ".partial"; }

void publish_checkpoint(const std::string & dir, const std::string & final_path, int64_t keep) {
  std::error_code error;
  fs::rename(partial_path(final_path), final_path, error);
  KOSMOS_CHECK(!error, "checkpoint ", partial_path(final_path), ": cannot rename it to ", final_path, " (",
               error.message(), "); check the folder's permissions");
  const fs::path latest = fs::path(dir) / "latest", latest_partial = fs::path(dir) / "latest.partial";
  {
    std::ofstream pointer(latest_partial, std::ios::trunc);
    pointer << fs::path(final_path).filename().string() << "\n";
    pointer.flush();
    KOSMOS_CHECK(pointer, latest_partial.string(), ": cannot write it; check the folder's permissions and space");
  }
  fs::rename(latest_partial, latest, error);
  KOSMOS_CHECK(!error, latest_partial.string(), ": cannot rename it to ", latest.string(), " (", error.message(), ")");
  // Leftovers of writes that never finished, then the oldest complete checkpoints beyond `keep`.
  for (const fs::directory_entry & entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step_", 0) == 0 && entry.path().extension() == ".partial") fs::remove(entry.path(), error);
  }
  const std::map<int64_t, fs::path> found = complete_checkpoints(dir);
  int64_t surplus = static_cast<int64_t>(found.size()) - keep;
  for (auto it = found.begin(); keep > 0 && surplus > 0; ++it, --surplus) fs::remove(it->second, error);
}

std::vector<std::string> resume_candidates(const std::string & resume, const std::string & save_dir,
                                           const std::string & option) {
  if (resume.empty()) return {};
  const bool automatic = resume == "auto";
  KOSMOS_CHECK(!automatic || !save_dir.empty(), option, " auto looks in --save-dir, which is not given; add "
               "--save-dir DIR or name a checkpoint file");
  const fs::path where = automatic ? fs::path(save_dir) : fs::path(resume);
  if (fs::is_regular_file(where)) return {where.string()};  // the one file asked for
  if (!fs::is_directory(where)) {
    KOSMOS_CHECK(automatic, option, " ", resume, ": no such file or folder; name a checkpoint (step_*.h5), a folder "
                 "of them, or use auto");
    return {};  // auto, and the folder does not exist yet: a fresh start
  }
  const std::map<int64_t, fs::path> found = complete_checkpoints(where);
  KOSMOS_CHECK(automatic || !found.empty(), option, " ", resume, ": the folder holds no complete checkpoint "
               "(step_*.h5); name another folder or file");
  // `latest` first (it may name a file outside the step order), then the complete ones, newest first.
  std::vector<std::string> candidates;
  const fs::path latest = where / "latest";
  if (fs::is_regular_file(latest)) {
    std::ifstream pointer(latest);
    std::string name;
    std::getline(pointer, name);
    if (!name.empty() && fs::is_regular_file(where / name)) candidates.push_back((where / name).string());
  }
  for (auto it = found.rbegin(); it != found.rend(); ++it)
    if (candidates.empty() || candidates.front() != it->second.string()) candidates.push_back(it->second.string());
  return candidates;
}

std::string resolve_resume(const std::string & resume, const std::string & save_dir, const std::string & option) {
  const std::vector<std::string> candidates = resume_candidates(resume, save_dir, option);
  return candidates.empty() ? "" : candidates.front();
}

}  // namespace kosmos::io
