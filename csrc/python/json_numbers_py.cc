// json_numbers.h: rounded_json_array, a scores array written as Python's json module writes it.
#include <string>

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
}

}  // namespace python
}  // namespace streamtag
