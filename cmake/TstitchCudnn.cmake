# SPDX-License-Identifier: Apache-2.0
include_guard(GLOBAL)

# tstitch_probe_cudnn(<target>): the cuDNN probe of the CUDA backend.
#
# cuDNN fused attention (AttentionPath::cudnn): compiled when the cuDNN 9 headers are found;
# libcudnn itself is never linked but opened at run time (dlopen: $TSTITCH_CUDNN_LIBRARY, then
# libcudnn.so.9), so the build runs, with the flash path, where cuDNN is missing. Headers are
# searched in CUDNN_INCLUDE_DIR, <prefix>/cudnn/include and <prefix>/include for each
# CMAKE_PREFIX_PATH entry (benchmarks/gpu/pack_deps.sh copies them to .deps/cudnn/include),
# and the CUDA toolkit's include directories. Include dir and definition are build-interface
# only: the installed tstitch::cuda_dit keeps the path compiled in; a consumer compiling
# src/cuda/tstitch_cuda.cu itself defines TSTITCH_HAS_CUDNN and puts cudnn_graph.h on its include path.
#
# Adds the cache option TSTITCH_WITH_CUDNN and the cache entry TSTITCH_CUDNN_INCLUDE_DIR.
function(tstitch_probe_cudnn target)
  option(TSTITCH_WITH_CUDNN "Compile the cuDNN attention path when the cuDNN 9 headers are found"
         ON)
  if(TSTITCH_WITH_CUDNN)
    set(_tstitch_cudnn_hints "")
    foreach(_prefix IN LISTS CMAKE_PREFIX_PATH)
      list(APPEND _tstitch_cudnn_hints "${_prefix}/cudnn/include" "${_prefix}/include")
    endforeach()
    find_path(TSTITCH_CUDNN_INCLUDE_DIR cudnn_graph.h
              HINTS ${CUDNN_INCLUDE_DIR} $ENV{CUDNN_INCLUDE_DIR} ${_tstitch_cudnn_hints}
                    ${CUDAToolkit_INCLUDE_DIRS}
              DOC "Directory of cudnn_graph.h (cuDNN 9) for the cuDNN attention path")
    set(_tstitch_cudnn_version "")
    if(TSTITCH_CUDNN_INCLUDE_DIR AND EXISTS "${TSTITCH_CUDNN_INCLUDE_DIR}/cudnn_version.h")
      file(STRINGS "${TSTITCH_CUDNN_INCLUDE_DIR}/cudnn_version.h" _tstitch_cudnn_defines
           REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) +[0-9]+")
      foreach(_part MAJOR MINOR PATCHLEVEL)
        string(REGEX REPLACE ".*#define CUDNN_${_part} +([0-9]+).*" "\\1" _tstitch_cudnn_${_part}
               "${_tstitch_cudnn_defines}")
      endforeach()
      set(_tstitch_cudnn_version
          "${_tstitch_cudnn_MAJOR}.${_tstitch_cudnn_MINOR}.${_tstitch_cudnn_PATCHLEVEL}")
    endif()
    if(TSTITCH_CUDNN_INCLUDE_DIR AND _tstitch_cudnn_MAJOR GREATER_EQUAL 9)
      target_include_directories(${target} SYSTEM INTERFACE
                                 "$<BUILD_INTERFACE:${TSTITCH_CUDNN_INCLUDE_DIR}>")
      target_compile_definitions(${target} INTERFACE "$<BUILD_INTERFACE:TSTITCH_HAS_CUDNN=1>")
      target_link_libraries(${target} INTERFACE ${CMAKE_DL_LIBS})
      message(STATUS "tstitch: cuDNN attention: on (headers ${_tstitch_cudnn_version} in "
                     "${TSTITCH_CUDNN_INCLUDE_DIR}; libcudnn opened at run time: "
                     "$TSTITCH_CUDNN_LIBRARY, else libcudnn.so.9)")
    elseif(TSTITCH_CUDNN_INCLUDE_DIR)
      message(STATUS "tstitch: cuDNN attention: off (${TSTITCH_CUDNN_INCLUDE_DIR} has cuDNN "
                     "'${_tstitch_cudnn_version}', not 9 or newer)")
    else()
      message(STATUS "tstitch: cuDNN attention: off (cudnn_graph.h of cuDNN 9 not found; "
                     "set CUDNN_INCLUDE_DIR)")
    endif()
  else()
    message(STATUS "tstitch: cuDNN attention: off (TSTITCH_WITH_CUDNN=OFF)")
  endif()
endfunction()
