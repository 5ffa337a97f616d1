# LibTorch, taken from the torch wheel installed in the Python environment that runs the
# build (the project's uv environment: pyproject.toml disables build isolation for sbsconv
# so this is the same torch that will import the extension). TorchConfig.cmake is not used:
# for CUDA wheels it insists on a matching CUDA toolkit, which a CPU-only machine lacks and
# which the core does not need (CUDA work goes through ATen's dispatcher).
#
# Defines:
#   sbsconv::torch         ATen/LibTorch headers and libraries
#   sbsconv::torch_python  plus libtorch_python (the at::Tensor <-> torch.Tensor caster)
#   SBSCONV_TORCH_VERSION, SBSCONV_TORCH_LIBRARY_DIR

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE _sbsconv_torch_out
  ERROR_VARIABLE _sbsconv_torch_err
  RESULT_VARIABLE _sbsconv_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _sbsconv_torch_rc EQUAL 0)
  message(FATAL_ERROR
    "sbsconv builds against the torch installed in its Python environment, and "
    "'${Python_EXECUTABLE}' cannot import torch:\n${_sbsconv_torch_err}\n"
    "Install the project with uv (uv sync), which installs torch before building.")
endif()
string(REPLACE "\n" ";" _sbsconv_torch_out "${_sbsconv_torch_out}")
list(GET _sbsconv_torch_out 0 SBSCONV_TORCH_DIR)
list(GET _sbsconv_torch_out 1 SBSCONV_TORCH_VERSION)
list(GET _sbsconv_torch_out 2 _sbsconv_torch_abi)
set(SBSCONV_TORCH_LIBRARY_DIR "${SBSCONV_TORCH_DIR}/lib")
message(STATUS "sbsconv: building against torch ${SBSCONV_TORCH_VERSION} at ${SBSCONV_TORCH_DIR}")

set(_sbsconv_torch_libs)
foreach(_lib torch torch_cpu c10)
  find_library(SBSCONV_TORCH_LIB_${_lib} NAMES ${_lib}
    PATHS "${SBSCONV_TORCH_LIBRARY_DIR}" NO_DEFAULT_PATH REQUIRED)
  list(APPEND _sbsconv_torch_libs "${SBSCONV_TORCH_LIB_${_lib}}")
endforeach()
find_library(SBSCONV_TORCH_LIB_torch_python NAMES torch_python
  PATHS "${SBSCONV_TORCH_LIBRARY_DIR}" NO_DEFAULT_PATH REQUIRED)

add_library(sbsconv_torch INTERFACE)
add_library(sbsconv::torch ALIAS sbsconv_torch)
target_include_directories(sbsconv_torch SYSTEM INTERFACE
  "${SBSCONV_TORCH_DIR}/include"
  "${SBSCONV_TORCH_DIR}/include/torch/csrc/api/include")
target_link_libraries(sbsconv_torch INTERFACE ${_sbsconv_torch_libs})
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND NOT APPLE)
  target_compile_definitions(sbsconv_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_sbsconv_torch_abi})
endif()

add_library(sbsconv_torch_python INTERFACE)
add_library(sbsconv::torch_python ALIAS sbsconv_torch_python)
target_link_libraries(sbsconv_torch_python INTERFACE sbsconv::torch "${SBSCONV_TORCH_LIB_torch_python}")
