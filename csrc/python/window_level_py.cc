// window_level.h: WindowLevel, window_level_of and the level constants.
#include <string>

#include "bindings.h"
#include "window_level.h"

namespace streamtag {
namespace python {
namespace {

py::dict WindowLevelDict(const WindowLevel &w) {
  py::dict d;
  d["rms_dbfs"] = w.rms_dbfs;
  d["peak_dbfs"] = w.peak_dbfs;
  d["clipped"] = w.clipped;
  d["samples"] = w.samples;
  d["onsets"] = w.onsets;
  d["onset_rate_hz"] = w.onset_rate_hz;
  return d;
}

}  // namespace

void BindWindowLevel(py::module_ &m) {
  py::tuple field_names(kFrameLevelSize);
  for (int i = 0; i < kFrameLevelSize; ++i) {
    field_names[i] = kFrameLevelNames[i];
  }
  m.attr("FRAME_LEVEL_FIELDS") = field_names;
  m.attr("CLIP_LEVEL") = kClipLevel;
  m.attr("SILENCE_DBFS") = kSilenceDbfs;

  py::class_<WindowLevel>(m, "WindowLevel",
                          "A window's audio level and onset rate (read-only); see "
                          "streamtag.frontend.")
      .def_readonly("rms_dbfs", &WindowLevel::rms_dbfs)
      .def_readonly("peak_dbfs", &WindowLevel::peak_dbfs)
      .def_readonly("clipped", &WindowLevel::clipped)
      .def_readonly("samples", &WindowLevel::samples)
      .def_readonly("onsets", &WindowLevel::onsets)
      .def_readonly("onset_rate_hz", &WindowLevel::onset_rate_hz)
      .def("to_dict", &WindowLevelDict)
      .def("__repr__", [](const WindowLevel &w) {
        std::string text = w.ToString();  // key=value pairs, one space apart
        for (size_t i = text.find(' '); i != std::string::npos; i = text.find(' ', i + 2)) {
          text.replace(i, 1, ", ");
        }
        return "WindowLevel(" + text + ")";
      });

  m.def(
      "window_level_of",
      [](const FloatArray &features, int hop_length, double sample_rate) {
        if (features.ndim() != 2 || features.shape(1) != kFrameLevelSize) {
          throw std::invalid_argument(
              "features must be a 2-D array (frames, " + std::to_string(kFrameLevelSize) +
              "), as frame_levels returns");
        }
        const float *data = features.data();
        const int64_t n = features.shape(0);
        py::gil_scoped_release release;
        CheckFrameLevels(data, n);
        return WindowLevelOf(data, n, hop_length, sample_rate);
      },
      py::arg("features"), py::arg("hop_length"), py::arg("sample_rate"),
      "The WindowLevel of level rows (rows x 5, FRAME_LEVEL_FIELDS), hop_length samples a row "
      "(level_step x the frontend's hop_length for frame_levels' rows).");
}

}  // namespace python
}  // namespace streamtag
