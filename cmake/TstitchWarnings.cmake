# SPDX-License-Identifier: Apache-2.0
include_guard(GLOBAL)

# tstitch_warning_flags(<out-var>)
#
# The strict warning flags for tstitch's own code: -Wall -Wextra -Wpedantic, plus -Werror when
# TSTITCH_WARNINGS_AS_ERRORS is ON (/W4 /permissive- [/WX] for MSVC).
function(tstitch_warning_flags out_var)
  if(MSVC)
    set(_flags /W4 /permissive-)
    set(_werror /WX)
  else()
    set(_flags -Wall -Wextra -Wpedantic)
    set(_werror -Werror)
  endif()
  if(TSTITCH_WARNINGS_AS_ERRORS)
    list(APPEND _flags ${_werror})
  endif()
  set(${out_var} ${_flags} PARENT_SCOPE)
endfunction()

# tstitch_target_warnings(<target>)
#
# Applies tstitch_warning_flags() to a project-internal target (tests, examples, benchmarks) as
# PRIVATE options for its C++ sources. Never used on the tstitch::tstitch interface, so
# consumers keep their own flags.
function(tstitch_target_warnings target)
  tstitch_warning_flags(_flags)
  list(TRANSFORM _flags PREPEND "$<$<COMPILE_LANGUAGE:CXX>:")
  list(TRANSFORM _flags APPEND ">")
  target_compile_options(${target} PRIVATE ${_flags})
endfunction()
