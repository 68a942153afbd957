# decimal.cmake: CMake's arithmetic is integer; decimal_to_nano(TEXT OUT) turns a non-negative decimal such as
# 1.9732998 (JSON's way of writing a double, no exponent) into integer units of 1e-9 for math(EXPR).
function(decimal_to_nano text out)
  if(NOT text MATCHES "^([0-9]+)(\\.([0-9]*))?$")
    message(FATAL_ERROR "${text} is not a non-negative decimal without an exponent")
  endif()
  string(SUBSTRING "${CMAKE_MATCH_3}000000000" 0 9 fraction)
  math(EXPR nano "${CMAKE_MATCH_1} * 1000000000 + 1${fraction} - 1000000000")
  set(${out} ${nano} PARENT_SCOPE)
endfunction()
