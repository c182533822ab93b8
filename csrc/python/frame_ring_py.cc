// frame_ring.h: FrameRing, the last frames of a stream by absolute index.
#include <mutex>
#include <string>

#include "bindings.h"
#include "frame_ring.h"

namespace streamtag {
namespace python {
namespace {

struct PyFrameRing {
  PyFrameRing(int64_t capacity, int n_mels, int64_t first_index)
      : core(capacity, n_mels, first_index) {}
  FrameRing core;
  std::mutex mutex;
};

}  // namespace

void BindFrameRing(py::module_ &m) {
  py::class_<PyFrameRing>(m, "FrameRing")
      .def(py::init<int64_t, int, int64_t>(), py::arg("capacity"), py::arg("n_mels"),
           py::arg("first_index") = 0)
      .def(
          "push",
          [](PyFrameRing &self, const FloatArray &frames) {
            if (frames.ndim() != 2 || frames.shape(1) != self.core.NumMels()) {
              throw std::invalid_argument(
                  "frames must be a 2-D array (n, " + std::to_string(self.core.NumMels()) +
                  ") for this ring of n_mels=" + std::to_string(self.core.NumMels()));
            }
            const float *data = frames.data();
            const int64_t n = frames.shape(0);
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.Push(data, n);
          },
          py::arg("frames"))
      .def(
          "window",
          [](PyFrameRing &self, int64_t end, int64_t length, bool transpose) {
            if (length <= 0) {
              throw std::invalid_argument("window length must be positive, got " +
                                          std::to_string(length));
            }
            const py::ssize_t n = static_cast<py::ssize_t>(length);
            const py::ssize_t mels = self.core.NumMels();
            py::array_t<float> out = transpose ? py::array_t<float>({mels, n})
                                               : py::array_t<float>({n, mels});
            float *dst = out.mutable_data();
            {
              py::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(self.mutex);
              self.core.Window(end, length, transpose, dst);
            }
            return out;
          },
          py::arg("end"), py::arg("length"), py::arg("transpose") = false)
      .def(
          "reset",
          [](PyFrameRing &self, int64_t first_index) {
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.Reset(first_index);
          },
          py::arg("first_index") = 0)
      .def_property_readonly("capacity", [](PyFrameRing &s) { return s.core.Capacity(); })
      .def_property_readonly("n_mels", [](PyFrameRing &s) { return s.core.NumMels(); })
      .def_property_readonly("begin_index", [](PyFrameRing &s) { return s.core.BeginIndex(); })
      .def_property_readonly("end_index", [](PyFrameRing &s) { return s.core.EndIndex(); })
      .def_property_readonly("size", [](PyFrameRing &s) { return s.core.Size(); })
      .def_property_readonly("frames_overwritten",
                             [](PyFrameRing &s) { return s.core.FramesOverwritten(); });
}

}  // namespace python
}  // namespace streamtag
