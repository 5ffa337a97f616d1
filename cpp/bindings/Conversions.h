#pragma once

// Conversions between Python values and the core's small types, shared by the binding's
// translation units.

#include <torch/csrc/utils/pybind.h>

#include "sbsconv/common/Error.h"
#include "sbsconv/media/Probe.h"

namespace sbsconv::bindings {

// fractions.Fraction, an int, or a (num, den) tuple -> Rational.
inline Rational to_rational(const pybind11::object& value) {
  namespace py = pybind11;
  if (py::isinstance<py::tuple>(value)) {
    auto t = value.cast<py::tuple>();
    return Rational{t[0].cast<int>(), t[1].cast<int>()};
  }
  if (py::isinstance<py::int_>(value)) {
    return Rational{value.cast<int>(), 1};
  }
  if (py::hasattr(value, "numerator") && py::hasattr(value, "denominator")) {
    return Rational{value.attr("numerator").cast<int>(), value.attr("denominator").cast<int>()};
  }
  throw Error(ErrorKind::Option, "arguments", "expected a fraction");
}

// The typed option structs the engine is configured with (EngineOptions.cpp).
void bind_engine_options(pybind11::module_& m);

} // namespace sbsconv::bindings
