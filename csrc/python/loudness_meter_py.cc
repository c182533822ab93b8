// loudness_meter.h: LoudnessMeter, k_weighting, loudness_of_power and SILENCE_LUFS.
#include <mutex>
#include <string>
#include <vector>

#include "bindings.h"
#include "loudness_meter.h"

namespace streamtag {
namespace python {
namespace {

struct PyLoudnessMeter {
  PyLoudnessMeter(double sample_rate, const std::vector<double> &weights)
      : core(sample_rate, weights) {}
  LoudnessMeter core;
  std::mutex mutex;
};

}  // namespace

void BindLoudnessMeter(py::module_ &m) {
  m.attr("SILENCE_LUFS") = kSilenceLufs;
  m.def("loudness_of_power", &LoudnessOfPower, py::arg("power"),
        "-0.691 + 10 log10(power) LUFS (BS.1770), SILENCE_LUFS for no power.");
  m.def(
      "k_weighting",
      [](double sample_rate) {
        Biquad shelf, high_pass;
        KWeighting(sample_rate, &shelf, &high_pass);
        auto row = [](const Biquad &q) {
          return py::make_tuple(py::make_tuple(q.b0, q.b1, q.b2),
                                py::make_tuple(1.0, q.a1, q.a2));
        };
        return py::make_tuple(row(shelf), row(high_pass));
      },
      py::arg("sample_rate"),
      "BS.1770's K-weighting at a sample rate: ((b, a) of the shelf, (b, a) of the high-pass).");

  py::class_<PyLoudnessMeter>(m, "LoudnessMeter")
      .def(py::init<double, const std::vector<double> &>(), py::arg("sample_rate"),
           py::arg("channel_weights"))
      .def(
          "accept_waveform",
          [](PyLoudnessMeter &self, const FloatArray &x, bool planar) {
            const int channels = self.core.Channels();
            const py::ssize_t channel_axis = planar ? 0 : 1;
            const bool fits = (x.ndim() == 1 && channels == 1) ||
                              (x.ndim() == 2 && x.shape(channel_axis) == channels);
            if (!fits) {
              std::string shape = "(";
              for (py::ssize_t d = 0; d < x.ndim(); ++d) {
                shape += (d ? ", " : "") + std::to_string(x.shape(d));
              }
              throw std::invalid_argument(
                  "loudness: audio must be " +
                  std::string(planar ? "(channels, frames)" : "(frames, channels)") +
                  " with this meter's " + std::to_string(channels) + " channels" +
                  (channels == 1 ? " (or 1-D)" : "") + ", got shape " + shape + ")");
            }
            const int64_t frames = x.ndim() == 1 ? x.shape(0) : x.shape(planar ? 1 : 0);
            const float *data = x.data();
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(self.mutex);
            self.core.AcceptWaveform(data, frames, planar);
          },
          py::arg("samples"), py::arg("planar") = false,
          "Interleaved (frames, channels) samples, or planar (channels, frames) ones; 1-D for "
          "one channel.")
      .def("pop_blocks",
           [](PyLoudnessMeter &self) {
             std::lock_guard<std::mutex> lock(self.mutex);
             py::array_t<double> out(static_cast<py::ssize_t>(self.core.BlocksReady()));
             self.core.PopBlocks(out.mutable_data(), self.core.BlocksReady());
             return out;
           })
      .def("reset",
           [](PyLoudnessMeter &self) {
             std::lock_guard<std::mutex> lock(self.mutex);
             self.core.Reset();
           })
      .def_property_readonly("block_length",
                             [](PyLoudnessMeter &self) { return self.core.BlockLength(); })
      .def_property_readonly("blocks_ready",
                             [](PyLoudnessMeter &self) { return self.core.BlocksReady(); })
      .def_property_readonly("blocks_completed",
                             [](PyLoudnessMeter &self) { return self.core.BlocksCompleted(); })
      .def_property_readonly("frames_accepted",
                             [](PyLoudnessMeter &self) { return self.core.FramesAccepted(); })
      .def_property_readonly("nonfinite_samples",
                             [](PyLoudnessMeter &self) { return self.core.NonfiniteSamples(); })
      .def_property_readonly("channels",
                             [](PyLoudnessMeter &self) { return self.core.Channels(); })
      .def_property_readonly("sample_rate",
                             [](PyLoudnessMeter &self) { return self.core.SampleRate(); })
      .def("__repr__", [](PyLoudnessMeter &self) {
        return "LoudnessMeter(" + self.core.ToString() + ")";
      });
}

}  // namespace python
}  // namespace streamtag
