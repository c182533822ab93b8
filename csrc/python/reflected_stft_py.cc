// reflected_stft.h: ReflectedStft, silero-vad's magnitude spectra of short rows.
#include <mutex>
#include <string>
#include <vector>

#include "bindings.h"
#include "reflected_stft.h"

namespace streamtag {
namespace python {
namespace {

struct PyReflectedStft {
  PyReflectedStft(const std::vector<float> &window, int row_length, int hop, int pad)
      : core(window, row_length, hop, pad) {}
  ReflectedStft core;
  std::mutex mutex;
};

}  // namespace

void BindReflectedStft(py::module_ &m) {
  py::class_<PyReflectedStft>(m, "ReflectedStft",
                              "Magnitude spectra of rows of samples, each reflected pad "
                              "samples past its end: silero-vad's STFT (streamtag.engine.speech).")
      .def(py::init([](const FloatArray &window, int row_length, int hop, int pad) {
             if (window.ndim() != 1) throw std::invalid_argument("window must be 1-D");
             std::vector<float> w(window.data(), window.data() + window.shape(0));
             return new PyReflectedStft(w, row_length, hop, pad);
           }),
           py::arg("window"), py::arg("row_length"), py::arg("hop"), py::arg("pad"))
      .def(
          "magnitudes",
          [](PyReflectedStft &self, const FloatArray &rows) {
            const int length = self.core.RowLength();
            if (rows.ndim() != 2 || rows.shape(1) != length) {
              throw std::invalid_argument("rows must be a 2-D array (rows, " +
                                          std::to_string(length) + ")");
            }
            const float *data = rows.data();
            const py::ssize_t n = rows.shape(0);
            py::array_t<float> out({n, py::ssize_t(self.core.NumBins()),
                                    py::ssize_t(self.core.NumFrames())});
            float *dst = out.mutable_data();
            {
              py::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(self.mutex);
              self.core.Magnitudes(data, n, dst);
            }
            return out;
          },
          py::arg("rows"),
          "(rows, bins, frames) magnitudes of rows (rows, row_length) of samples.")
      .def_property_readonly("bins", [](PyReflectedStft &s) { return s.core.NumBins(); })
      .def_property_readonly("frames", [](PyReflectedStft &s) { return s.core.NumFrames(); });
}

}  // namespace python
}  // namespace streamtag
