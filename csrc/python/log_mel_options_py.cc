// log_mel_options.h: LogMelOptions, its fields, validate, presets.
#include "bindings.h"
#include "log_mel_options.h"

namespace streamtag {
namespace python {

void BindLogMelOptions(py::module_ &m) {
  py::class_<LogMelOptions>(m, "LogMelOptions")
      .def(py::init<>())
      .def_readwrite("sample_rate", &LogMelOptions::sample_rate)
      .def_readwrite("n_fft", &LogMelOptions::n_fft)
      .def_readwrite("win_length", &LogMelOptions::win_length)
      .def_readwrite("hop_length", &LogMelOptions::hop_length)
      .def_readwrite("window", &LogMelOptions::window)
      .def_readwrite("center", &LogMelOptions::center)
      .def_readwrite("pad_mode", &LogMelOptions::pad_mode)
      .def_readwrite("n_mels", &LogMelOptions::n_mels)
      .def_readwrite("fmin", &LogMelOptions::fmin)
      .def_readwrite("fmax", &LogMelOptions::fmax)
      .def_readwrite("mel_scale", &LogMelOptions::mel_scale)
      .def_readwrite("norm", &LogMelOptions::norm)
      .def_readwrite("power", &LogMelOptions::power)
      .def_readwrite("log", &LogMelOptions::log)
      .def_readwrite("amin", &LogMelOptions::amin)
      .def_readwrite("db_multiplier", &LogMelOptions::db_multiplier)
      .def_readwrite("log1p_gain", &LogMelOptions::log1p_gain)
      .def_readwrite("allow_empty_filters", &LogMelOptions::allow_empty_filters)
      .def("validate", &LogMelOptions::Validate)
      .def("__str__", &LogMelOptions::ToString)
      .def_static("preset", &LogMelOptions::Preset, py::arg("name"))
      .def_static("preset_names", &LogMelOptions::PresetNames);
}

}  // namespace python
}  // namespace streamtag
