// online_log_mel.h: OnlineLogMel (frames, and the levels it keeps) and compute_logmel.
#include <algorithm>
#include <mutex>
#include <vector>

#include "bindings.h"
#include "log_mel_options.h"
#include "online_log_mel.h"
#include "tonal_peaks.h"
#include "window_level.h"

namespace streamtag {
namespace python {
namespace {

struct PyOnlineLogMel {
  explicit PyOnlineLogMel(const LogMelOptions &opts) : core(opts) {}
  OnlineLogMel core;
  std::mutex mutex;
};

py::array_t<float> PopFrames(PyOnlineLogMel &self, int64_t max_frames) {
  std::lock_guard<std::mutex> lock(self.mutex);
  int64_t n = self.core.FramesPending();
  if (max_frames >= 0 && max_frames < n) n = max_frames;
  py::array_t<float> out({static_cast<py::ssize_t>(n),
                          static_cast<py::ssize_t>(self.core.NumMels())});
  float *dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    self.core.Pop(dst, n);
  }
  return out;
}

py::array_t<float> PopTonalRows(PyOnlineLogMel &self, int64_t max_rows) {
  std::lock_guard<std::mutex> lock(self.mutex);
  int64_t n = self.core.TonalPending();
  if (max_rows >= 0 && max_rows < n) n = max_rows;
  py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(kTonalRowSize)});
  self.core.PopTonal(out.mutable_data(), n);
  return out;
}

py::array_t<float> FrameLevels(PyOnlineLogMel &self, int64_t end_frame, int64_t length) {
  std::vector<float> rows;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(self.mutex);
    // The rows of the level steps ending in the range (throws for a bad range).
    rows.resize(static_cast<size_t>(self.core.LevelRowCount(end_frame, length)) *
                kFrameLevelSize);
    self.core.FrameLevels(end_frame, length, rows.data());
  }
  py::array_t<float> out({static_cast<py::ssize_t>(rows.size() / kFrameLevelSize),
                          static_cast<py::ssize_t>(kFrameLevelSize)});
  std::copy(rows.begin(), rows.end(), out.mutable_data());
  return out;
}

}  // namespace

void BindOnlineLogMel(py::module_ &m) {
  py::class_<PyOnlineLogMel>(m, "OnlineLogMel")
      .def(py::init<const LogMelOptions &>(), py::arg("options"))
      .def(
          "accept_waveform",
          [](PyOnlineLogMel &self, const FloatArray &x) {
            const float *data = Mono(x);
            const int64_t n = x.shape(0);
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.AcceptWaveform(data, n);
          },
          py::arg("samples"))
      .def(
          "input_finished",
          [](PyOnlineLogMel &self) {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.InputFinished();
          })
      .def("pop", &PopFrames, py::arg("max_frames") = -1)
      .def("reset",
           [](PyOnlineLogMel &self) {
             std::lock_guard<std::mutex> lock(self.mutex);
             self.core.Reset();
           })
      .def("num_frames_for",
           [](PyOnlineLogMel &self, int64_t n) { return self.core.NumFramesFor(n); },
           py::arg("num_samples"))
      .def_property_readonly("frames_ready",
                             [](PyOnlineLogMel &self) { return self.core.FramesReady(); })
      .def_property_readonly("frames_pending",
                             [](PyOnlineLogMel &self) { return self.core.FramesPending(); })
      .def_property_readonly("frames_popped",
                             [](PyOnlineLogMel &self) { return self.core.FramesPopped(); })
      .def_property_readonly("samples_accepted",
                             [](PyOnlineLogMel &self) { return self.core.SamplesAccepted(); })
      .def_property_readonly("nonfinite_samples",
                             [](PyOnlineLogMel &self) { return self.core.NonfiniteSamples(); })
      .def_property_readonly("is_finished",
                             [](PyOnlineLogMel &self) { return self.core.IsFinished(); })
      .def_property_readonly("n_mels", [](PyOnlineLogMel &self) { return self.core.NumMels(); })
      .def(
          "keep_tonal",
          [](PyOnlineLogMel &self, bool on) {
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.KeepTonal(on);
          },
          py::arg("on") = true)
      .def_property_readonly("tonal_kept",
                             [](PyOnlineLogMel &self) {
                               std::lock_guard<std::mutex> lock(self.mutex);
                               return self.core.TonalKept();
                             })
      .def("pop_tonal", &PopTonalRows, py::arg("max_rows") = -1)
      .def(
          "keep_levels",
          [](PyOnlineLogMel &self, int64_t frames) {
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.KeepLevels(frames);
          },
          py::arg("frames"))
      .def_property_readonly("level_frames_kept",
                             [](PyOnlineLogMel &self) { return self.core.LevelFramesKept(); })
      .def_property_readonly("level_step",
                             [](PyOnlineLogMel &self) { return self.core.LevelStep(); })
      .def("frame_levels", &FrameLevels, py::arg("end_frame"), py::arg("length"))
      .def(
          "window_level",
          [](PyOnlineLogMel &self, int64_t end_frame, int64_t length) {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(self.mutex);
            return self.core.WindowLevel(end_frame, length);
          },
          py::arg("end_frame"), py::arg("length"));

  m.def(
      "compute_logmel",
      [](const FloatArray &x, const LogMelOptions &opts) {
        const float *data = Mono(x);
        const int64_t n = x.shape(0);
        OnlineLogMel fe(opts);
        const int64_t frames = fe.NumFramesFor(n);
        py::array_t<float> out({static_cast<py::ssize_t>(frames),
                                static_cast<py::ssize_t>(opts.n_mels)});
        float *dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          fe.ComputeAll(data, n, dst);
        }
        return out;
      },
      py::arg("samples"), py::arg("options"));
}

}  // namespace python
}  // namespace streamtag
