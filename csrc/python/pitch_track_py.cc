// pitch_track.h: pitch_frames, a voice's pitch track for telling singing from speech.
#include "bindings.h"
#include "pitch_track.h"

namespace streamtag {
namespace python {

void BindPitchTrack(py::module_ &m) {
  m.attr("PITCH_RATE") = kPitchRate;
  m.attr("PITCH_FRAME") = kPitchFrame;
  m.attr("PITCH_HOP") = kPitchHop;
  m.attr("PITCH_MIN_LAG") = kPitchMinLag;
  m.attr("PITCH_MAX_LAG") = kPitchMaxLag;
  m.attr("PITCH_ROW_SIZE") = kPitchRowSize;
  m.def(
      "pitch_frames",
      [](const FloatArray &blocks) {
        if (blocks.ndim() != 2) {
          throw std::invalid_argument(
              "blocks must be a 2-D array (blocks, samples) of 16-kHz samples, each block a "
              "detector step after the samples before it");
        }
        const int64_t n = blocks.shape(0);
        const int length = static_cast<int>(blocks.shape(1));
        const int frames = PitchFramesPerBlock(length);
        const float *data = blocks.data();
        py::array_t<float> out({n, static_cast<int64_t>(frames),
                                static_cast<int64_t>(kPitchRowSize)});
        float *dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          PitchFrames(data, n, length, dst);
        }
        return out;
      },
      py::arg("blocks"),
      "Each block's pitch rows (blocks x frames x 3: semitones above 100 Hz, YIN's normalised "
      "difference at the period, level in dB), the block halved to 8 kHz and cut into frames "
      "of PITCH_FRAME samples every PITCH_HOP.");
}

}  // namespace python
}  // namespace streamtag
