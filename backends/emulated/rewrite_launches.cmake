# rewrite_launches.cmake: turns a CUDA source of backends/cuda into C++ for the emulated GPU build (cmake -P, with
# INPUT and OUTPUT): `kernel<<<grid, block, shared, stream>>>(args)` becomes
# `::kosmos_emulation::Launch(grid, block, shared, stream).run([&](const auto &... a) { kernel(a...); })(args)`
# (cuda_surface.h runs it), and the dynamic shared memory declaration
# `extern __shared__ __align__(N) unsigned char name[];` a pointer to the block's. A launch written otherwise (the
# kernel not a plain name, or `>>>(` on another line) fails the build here, not in g++.
file(READ "${INPUT}" text)
string(REGEX MATCHALL "<<<" openings "${text}")
string(REGEX MATCHALL "[A-Za-z_][A-Za-z0-9_]*<<<[^\n]*>>>\\(" launches "${text}")
list(LENGTH openings opening_count)
list(LENGTH launches launch_count)
if(NOT launch_count EQUAL opening_count)
  message(FATAL_ERROR "${INPUT}: ${opening_count} kernel launches open with <<< but ${launch_count} have a plain "
                      "kernel name before it and >>>( on the same line; write each launch so for the emulated GPU")
endif()
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*)<<<([^\n]*)>>>\\("
       "::kosmos_emulation::Launch(\\2).run([&](const auto &... kosmos_arguments) { \\1(kosmos_arguments...); })("
       text "${text}")
string(REGEX REPLACE "extern __shared__ __align__\\(([0-9]+)\\) unsigned char ([A-Za-z_]+)\\[\\];"
       "unsigned char * const \\2 = ::kosmos_emulation::dynamic_shared();" text "${text}")
file(WRITE "${OUTPUT}" "#line 1 \"${INPUT}\"\n${text}")
