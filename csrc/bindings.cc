// The one binding file: mirrors the C++ core class for class, in snake_case. Compute-heavy calls
// release the GIL; each binding-side object holds a mutex so that two Python threads sharing one
// instance serialise instead of racing, while different instances run in parallel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <string>

#include "fft.h"
#include "frame_ring.h"
#include "json_numbers.h"
#include "log_mel_options.h"
#include "loudness_meter.h"
#include "mel_filterbank.h"
#include "online_log_mel.h"
#include "window_level.h"

namespace py = pybind11;
using streamtag::FrameRing;
using streamtag::LogMelOptions;
using streamtag::LoudnessMeter;
using streamtag::MelFilterbank;
using streamtag::OnlineLogMel;
using streamtag::WindowLevel;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

struct PyOnlineLogMel {
  explicit PyOnlineLogMel(const LogMelOptions &opts) : core(opts) {}
  OnlineLogMel core;
  std::mutex mutex;
};

struct PyLoudnessMeter {
  PyLoudnessMeter(double sample_rate, const std::vector<double> &weights)
      : core(sample_rate, weights) {}
  LoudnessMeter core;
  std::mutex mutex;
};

struct PyFrameRing {
  PyFrameRing(int64_t capacity, int n_mels, int64_t first_index)
      : core(capacity, n_mels, first_index) {}
  FrameRing core;
  std::mutex mutex;
};

const float *Mono(const FloatArray &x) {
  if (x.ndim() != 1) {
    throw std::invalid_argument("audio must be 1-D (mono samples), got an array with " +
                                std::to_string(x.ndim()) +
                                " dimensions; mix channels down first");
  }
  return x.data();
}

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

py::array_t<float> FrameLevels(PyOnlineLogMel &self, int64_t end_frame, int64_t length) {
  std::vector<float> rows;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(self.mutex);
    // The rows of the level steps ending in the range (throws for a bad range).
    rows.resize(static_cast<size_t>(self.core.LevelRowCount(end_frame, length)) *
                streamtag::kFrameLevelSize);
    self.core.FrameLevels(end_frame, length, rows.data());
  }
  py::array_t<float> out(
      {static_cast<py::ssize_t>(rows.size() / streamtag::kFrameLevelSize),
       static_cast<py::ssize_t>(streamtag::kFrameLevelSize)});
  std::copy(rows.begin(), rows.end(), out.mutable_data());
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "streamtag C++ core: FFT, mel filterbank, OnlineLogMel (log-mel frames and, when kept, "
      "per-frame levels and onset flux), WindowLevel (a window's dBFS levels, clipped samples, "
      "onset rate), FrameRing";

  py::tuple field_names(streamtag::kFrameLevelSize);
  for (int i = 0; i < streamtag::kFrameLevelSize; ++i) {
    field_names[i] = streamtag::kFrameLevelNames[i];
  }
  m.attr("FRAME_LEVEL_FIELDS") = field_names;
  m.attr("CLIP_LEVEL") = streamtag::kClipLevel;
  m.attr("SILENCE_DBFS") = streamtag::kSilenceDbfs;

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
        if (features.ndim() != 2 || features.shape(1) != streamtag::kFrameLevelSize) {
          throw std::invalid_argument(
              "features must be a 2-D array (frames, " +
              std::to_string(streamtag::kFrameLevelSize) + "), as frame_levels returns");
        }
        const float *data = features.data();
        const int64_t n = features.shape(0);
        py::gil_scoped_release release;
        streamtag::CheckFrameLevels(data, n);
        return streamtag::WindowLevelOf(data, n, hop_length, sample_rate);
      },
      py::arg("features"), py::arg("hop_length"), py::arg("sample_rate"),
      "The WindowLevel of level rows (rows x 5, FRAME_LEVEL_FIELDS), hop_length samples a row "
      "(level_step x the frontend's hop_length for frame_levels' rows).");

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

  m.def(
      "mel_filterbank",
      [](const LogMelOptions &opts) {
        MelFilterbank bank(opts);
        py::array_t<float> out({static_cast<py::ssize_t>(bank.NumMels()),
                                static_cast<py::ssize_t>(bank.NumBins())});
        const std::vector<float> dense = bank.Dense();
        std::copy(dense.begin(), dense.end(), out.mutable_data());
        return out;
      },
      py::arg("options"));

  m.def(
      "rfft",
      [](const FloatArray &x) {
        const float *data = Mono(x);
        streamtag::RealFft fft(static_cast<int>(x.shape(0)));
        std::vector<float> re(fft.NumBins()), im(fft.NumBins());
        {
          py::gil_scoped_release release;
          fft.Forward(data, re.data(), im.data());
        }
        py::array_t<std::complex<float>> out(fft.NumBins());
        auto *dst = out.mutable_data();
        for (int k = 0; k < fft.NumBins(); ++k) dst[k] = {re[k], im[k]};
        return out;
      },
      py::arg("samples"), "Real-input FFT (bins 0..n/2) of our own transform; for tests.");

  m.def(
      "rounded_json_array",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast> &values,
         int decimals) -> py::object {
        if (values.ndim() != 1) {
          throw std::invalid_argument("values must be 1-D, got an array with " +
                                      std::to_string(values.ndim()) + " dimensions");
        }
        std::string text;
        if (!streamtag::RoundedJsonArray(values.data(), static_cast<size_t>(values.shape(0)),
                                         decimals, text)) {
          return py::none();
        }
        return py::str(text);
      },
      py::arg("values"), py::arg("decimals"),
      "The JSON array json.dumps writes for numpy.round(values, decimals).tolist(), or None "
      "when a rounded value is not finite.");

  m.attr("SILENCE_LUFS") = streamtag::kSilenceLufs;
  m.def("loudness_of_power", &streamtag::LoudnessOfPower, py::arg("power"),
        "-0.691 + 10 log10(power) LUFS (BS.1770), SILENCE_LUFS for no power.");
  m.def(
      "k_weighting",
      [](double sample_rate) {
        streamtag::Biquad shelf, high_pass;
        streamtag::KWeighting(sample_rate, &shelf, &high_pass);
        auto row = [](const streamtag::Biquad &q) {
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
