# Sanitizer builds, libFuzzer harnesses and their replay tests. Included at the end of the
# top-level CMakeLists.txt, after sbsconv_core and sbsconv_cpp_tests are defined. The
# scikit-build-core build is unaffected: both options are off there, and the replay runners
# are built only with the GoogleTest suite (scripts/test.sh).
#
#   SBSCONV_SANITIZE=address  -fsanitize=address,undefined on the core, the GoogleTest suite
#                             and the replay runners (preset "sanitize")
#   SBSCONV_SANITIZE=thread   -fsanitize=thread on the same (preset "tsan")
#   SBSCONV_FUZZ=ON           the libFuzzer harnesses fuzz_<name> (preset "fuzz", clang only),
#                             over an instrumented copy of the core sources they need
#
# LibTorch, OpenMP and FFmpeg are prebuilt and stay uninstrumented; tests/sanitizers/README.md
# says what that means for each sanitizer.

set(SBSCONV_SANITIZE "" CACHE STRING "Sanitizers for the core and the C++ tests: address (ASan+UBSan), thread (TSan), or empty")
set_property(CACHE SBSCONV_SANITIZE PROPERTY STRINGS "" address thread)
option(SBSCONV_FUZZ "Build the libFuzzer harnesses in tests/fuzz (clang)" OFF)

set(SBSCONV_FUZZ_HARNESSES fuzz_media fuzz_state_file fuzz_journal fuzz_weights fuzz_isobmff fuzz_depth_file fuzz_hevc)
set(_sbsconv_fuzz_dir "${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz")

# ---- sanitizers on the core and the tests ---------------------------------------------------
set(_sbsconv_sanitize_flags)
if(SBSCONV_SANITIZE STREQUAL "address")
  # -fno-sanitize-recover: a UBSan report fails the test instead of scrolling past.
  # _GLIBCXX_ASSERTIONS: bounds checks in the standard containers (no ABI change).
  set(_sbsconv_sanitize_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined
      -fno-omit-frame-pointer -D_GLIBCXX_ASSERTIONS)
elseif(SBSCONV_SANITIZE STREQUAL "thread")
  set(_sbsconv_sanitize_flags -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT SBSCONV_SANITIZE STREQUAL "")
  message(FATAL_ERROR "SBSCONV_SANITIZE must be address, thread or empty, not '${SBSCONV_SANITIZE}'")
endif()

function(_sbsconv_sanitize target)
  if(_sbsconv_sanitize_flags AND TARGET ${target})
    target_compile_options(${target} PRIVATE ${_sbsconv_sanitize_flags})
    target_link_options(${target} PRIVATE ${_sbsconv_sanitize_flags})
  endif()
endfunction()

if(_sbsconv_sanitize_flags)
  message(STATUS "sbsconv: sanitizers on the core and the C++ tests: ${SBSCONV_SANITIZE}")
  _sbsconv_sanitize(sbsconv_core)
  # The static core's users link the sanitizer runtime too.
  target_link_options(sbsconv_core INTERFACE ${_sbsconv_sanitize_flags})
  _sbsconv_sanitize(sbsconv_cpp_tests)
endif()

# ---- replay runners: the corpora and reproducers as ctest cases -----------------------------
# Each harness without libFuzzer, linked with Replay.cpp's main(), over the ordinary core.
# Built with the GoogleTest suite (a dependency of sbsconv_cpp_tests, which scripts/test.sh
# builds) and run by ctest as fuzz_replay.<harness>.
if(TARGET sbsconv_cpp_tests)
  foreach(_harness IN LISTS SBSCONV_FUZZ_HARNESSES)
    set(_runner sbsconv_replay_${_harness})
    add_executable(${_runner} EXCLUDE_FROM_ALL
      "${_sbsconv_fuzz_dir}/Replay.cpp"
      "${_sbsconv_fuzz_dir}/${_harness}.cpp")
    target_link_libraries(${_runner} PRIVATE sbsconv_core)
    set_target_properties(${_runner} PROPERTIES BUILD_RPATH "${SBSCONV_TORCH_LIBRARY_DIR}")
    _sbsconv_sanitize(${_runner})
    add_dependencies(sbsconv_cpp_tests ${_runner})
    add_test(NAME fuzz_replay.${_harness}
      COMMAND ${_runner}
        "${_sbsconv_fuzz_dir}/regressions/${_harness}"
        "${_sbsconv_fuzz_dir}/corpus/${_harness}")
    set_tests_properties(fuzz_replay.${_harness} PROPERTIES TIMEOUT 120)
  endforeach()
endif()

# ---- libFuzzer harnesses ----------------------------------------------------------------------
if(SBSCONV_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SBSCONV_FUZZ needs clang (libFuzzer); configure with the 'fuzz' preset "
      "or -DCMAKE_CXX_COMPILER=clang++")
  endif()
  if(_sbsconv_sanitize_flags)
    message(FATAL_ERROR "SBSCONV_FUZZ brings its own sanitizers; leave SBSCONV_SANITIZE empty")
  endif()
  # Only the core sources the harnesses reach, taken from sbsconv_core's own list so that the
  # two cannot drift apart: common/ (which everything uses), the demuxing/decoding path, the
  # resume files, and the Depth-Anything-V2 builder.
  get_target_property(_core_sources sbsconv_core SOURCES)
  set(_fuzz_core_sources)
  foreach(_src IN LISTS _core_sources)
    if(_src MATCHES "cpp/sbsconv/common/[^/]+\\.cpp$"
       OR _src MATCHES "cpp/sbsconv/media/(Probe|VideoReader|InputFile|ColorConversion|CudaDevice|ImageFile|IsoBmff|HevcBitstream|MvHevcEncoder|DepthFile|LosslessVideo|MediaWriter|EncoderSelection|VideoEncoder|CarriedStreams|SegmentAssembler|StreamParams|OutputContainer)\\.cpp$"
       OR _src MATCHES "cpp/sbsconv/pipeline/(StateFile|Journal|RunLock)\\.cpp$"
       OR _src MATCHES "cpp/sbsconv/depth/(DepthAnythingV2|DinoV2|Int8Linear|DptHead|Weights|DepthModel)\\.cpp$")
      list(APPEND _fuzz_core_sources "${_src}")
    endif()
  endforeach()
  set(_fuzz_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined
      -fno-omit-frame-pointer -D_GLIBCXX_ASSERTIONS)

  add_library(sbsconv_fuzz_core STATIC EXCLUDE_FROM_ALL ${_fuzz_core_sources})
  target_include_directories(sbsconv_fuzz_core PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}/cpp")
  # No OpenMP: none of these sources has a parallel loop of its own, and clang's OpenMP is
  # libomp, a second runtime beside the libgomp that LibTorch uses.
  target_link_libraries(sbsconv_fuzz_core PUBLIC sbsconv::torch sbsconv::ffmpeg)
  target_compile_options(sbsconv_fuzz_core PRIVATE -fsanitize=fuzzer-no-link ${_fuzz_flags})

  add_custom_target(fuzz)
  foreach(_harness IN LISTS SBSCONV_FUZZ_HARNESSES)
    add_executable(${_harness} EXCLUDE_FROM_ALL "${_sbsconv_fuzz_dir}/${_harness}.cpp")
    target_link_libraries(${_harness} PRIVATE sbsconv_fuzz_core)
    target_compile_options(${_harness} PRIVATE -fsanitize=fuzzer ${_fuzz_flags})
    target_link_options(${_harness} PRIVATE -fsanitize=fuzzer ${_fuzz_flags})
    set_target_properties(${_harness} PROPERTIES BUILD_RPATH "${SBSCONV_TORCH_LIBRARY_DIR}")
    add_dependencies(fuzz ${_harness})
  endforeach()
  # The seed generator for the state, journal and weights corpora (tests/fuzz/make_seeds.sh).
  add_executable(sbsconv_fuzz_make_seeds EXCLUDE_FROM_ALL "${_sbsconv_fuzz_dir}/make_seeds.cpp")
  target_link_libraries(sbsconv_fuzz_make_seeds PRIVATE sbsconv_fuzz_core)
  target_compile_options(sbsconv_fuzz_make_seeds PRIVATE ${_fuzz_flags})
  target_link_options(sbsconv_fuzz_make_seeds PRIVATE ${_fuzz_flags})
  set_target_properties(sbsconv_fuzz_make_seeds PROPERTIES BUILD_RPATH "${SBSCONV_TORCH_LIBRARY_DIR}")
  message(STATUS "sbsconv: libFuzzer harnesses (target 'fuzz'): ${SBSCONV_FUZZ_HARNESSES}")
endif()
