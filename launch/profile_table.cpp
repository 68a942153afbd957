// profile_table.cpp: --profile's tables (profile_table.h): per op, and per matmul or attention shape.
#include "launch/profile_table.h"

#include <algorithm>
#include <iomanip>
#include <map>

namespace kosmos {
namespace {

constexpr size_t kShapeRows = 30;  // the costliest shapes listed

using Rows = std::vector<std::pair<std::string, Device::OpTime>>;

Rows costliest_first(const std::map<std::string, Device::OpTime> & totals) {
  Rows rows(totals.begin(), totals.end());
  std::sort(rows.begin(), rows.end(), [](const auto & a, const auto & b) { return a.second.seconds > b.second.seconds; });
  return rows;
}

void print_rows(std::ostream & log, const Rows & rows, double total, size_t name_width) {
  for (const auto & [name, time] : rows)
    log << "  " << std::left << std::setw(static_cast<int>(name_width)) << name << std::right << std::setw(9)
        << std::setprecision(3) << time.seconds << " s " << std::setw(6) << std::setprecision(1)
        << 100.0 * time.seconds / total << " %  " << time.calls << " calls\n";
}

}  // namespace

void print_profile(std::ostream & log, const std::vector<std::pair<std::string, Device::OpTime>> & times,
                   int64_t steps_run, double seconds_in_all) {
  std::map<std::string, Device::OpTime> by_op, by_shape;
  double total = 0.0;
  for (const auto & [name, time] : times) {
    const size_t tab = name.find('\t');
    Device::OpTime & op = by_op[name.substr(0, tab)];
    op.calls += time.calls;
    op.seconds += time.seconds;
    if (tab != std::string::npos) by_shape[name.substr(0, tab) + " " + name.substr(tab + 1)] = time;
    total += time.seconds;
  }
  log << "time per op over " << steps_run << " steps (" << std::fixed << std::setprecision(3) << total
      << " s in ops, " << seconds_in_all << " s in all):\n";
  print_rows(log, costliest_first(by_op), total, 34);
  if (by_shape.empty()) return;
  Rows shapes = costliest_first(by_shape);
  const size_t listed = std::min(shapes.size(), kShapeRows);
  log << "matmul and attention by shape (the " << listed << " costliest of " << shapes.size() << "):\n";
  shapes.resize(listed);
  print_rows(log, shapes, total, 72);
}

}  // namespace kosmos
