// profile_table.h: what --profile prints at the end of a run: the time of each op over the steps run, then the
// matmuls and attention by the shape they ran at (where the device names shapes, as a GPU's does).
#pragma once

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "backends/device.h"

namespace kosmos {

// `times`: Device::profile()'s entries, a name per op, with the shape after a tab where the device gives one.
void print_profile(std::ostream & log, const std::vector<std::pair<std::string, Device::OpTime>> & times,
                   int64_t steps_run, double seconds_in_all);

}  // namespace kosmos
