// json_numbers.h: rounded_json_array, a scores array written as Python's json module writes it;
// take_float_arrays, the float arrays of a JSON object read back.
#include <string>
#include <string_view>
#include <vector>

#include "bindings.h"
#include "json_numbers.h"

namespace streamtag {
namespace python {

void BindJsonNumbers(py::module_ &m) {
  m.def(
      "rounded_json_array",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast> &values,
         int decimals) -> py::object {
        if (values.ndim() != 1) {
          throw std::invalid_argument("values must be 1-D, got an array with " +
                                      std::to_string(values.ndim()) + " dimensions");
        }
        std::string text;
        if (!RoundedJsonArray(values.data(), static_cast<size_t>(values.shape(0)), decimals,
                              text)) {
          return py::none();
        }
        return py::str(text);
      },
      py::arg("values"), py::arg("decimals"),
      "The JSON array json.dumps writes for numpy.round(values, decimals).tolist(), or None "
      "when a rounded value is not finite.");

  m.def(
      "take_float_arrays",
      [](const py::bytes &data, Py_ssize_t end, const std::vector<std::string> &keys)
          -> py::object {
        const Py_ssize_t size = PyBytes_GET_SIZE(data.ptr());
        if (end < 0 || end > size) {
          throw std::invalid_argument("end must be 0 to len(data) = " + std::to_string(size) +
                                      ", got " + std::to_string(end));
        }
        const std::vector<std::string_view> names(keys.begin(), keys.end());
        std::vector<std::vector<double>> arrays;
        std::string rest;
        if (!TakeFloatArrays(PyBytes_AS_STRING(data.ptr()), static_cast<size_t>(end), names,
                             arrays, rest)) {
          return py::none();
        }
        py::tuple out(arrays.size() + 2);
        size_t count = 0;
        for (const auto &array : arrays) count += array.size();
        std::string packed;  // every array's doubles, one after another, native order
        packed.reserve(count * sizeof(double));
        for (const auto &array : arrays) {
          packed.append(reinterpret_cast<const char *>(array.data()),
                        array.size() * sizeof(double));
        }
        for (size_t k = 0; k < arrays.size(); ++k) {
          py::tuple values(arrays[k].size());
          for (size_t i = 0; i < arrays[k].size(); ++i) {
            PyObject *x = PyFloat_FromDouble(arrays[k][i]);
            if (x == nullptr) throw py::error_already_set();
            PyTuple_SET_ITEM(values.ptr(), static_cast<Py_ssize_t>(i), x);
          }
          out[k] = std::move(values);
        }
        out[arrays.size()] = py::bytes(rest);
        out[arrays.size() + 1] = py::bytes(packed);
        return std::move(out);
      },
      py::arg("data"), py::arg("end"), py::arg("keys"),
      "The members named keys of the JSON object data[:end], each an array of floats, taken "
      "out: (one tuple of floats per key, ..., the object's other bytes, every array's values "
      "as float64 bytes in native order, one array after another), or None when a key "
      "is missing, repeated, first, or its array holds anything but finite floats written "
      "without white space (the caller then parses data whole).");
}

}  // namespace python
}  // namespace streamtag
