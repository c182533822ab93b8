// content_features.h: content_features, the content classifier's ten features of a window,
// and content_pulse, the pulse of the frames before it.
#include <string>

#include "bindings.h"
#include "content_features.h"

namespace streamtag {
namespace python {
namespace {

// frames_db's frame and band counts; ValueError unless it is (frames, bands)
void FrameShape(const FloatArray &frames_db, int64_t *frames, int64_t *bands) {
  if (frames_db.ndim() != 2) {
    throw std::invalid_argument("frames_db must be a 2-D array (frames, bands) of dB");
  }
  *frames = frames_db.shape(0);
  *bands = frames_db.shape(1);
}

}  // namespace

void BindContentFeatures(py::module_ &m) {
  py::tuple names(kContentFeatureCount);
  for (int i = 0; i < kContentFeatureCount; ++i) names[i] = kContentFeatureNames[i];
  m.attr("CONTENT_FEATURES") = names;
  m.def(
      "content_features",
      [](const FloatArray &frames_db, double frame_rate) {
        int64_t frames, bands;
        FrameShape(frames_db, &frames, &bands);
        const float *data = frames_db.data();
        py::array_t<double> out(kContentFeatureCount);
        double *dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          ContentFeatures(data, frames, bands, frame_rate, dst);
        }
        return out;
      },
      py::arg("frames_db"), py::arg("frame_rate"),
      "The content classifier's features (CONTENT_FEATURES) of one window's frames (frames x "
      "bands, dB power) at frame_rate frames a second.");
  m.attr("PULSE_SECONDS") = kPulseSeconds;
  m.def(
      "content_pulse",
      [](const FloatArray &frames_db, double frame_rate) {
        int64_t frames, bands;
        FrameShape(frames_db, &frames, &bands);
        const float *data = frames_db.data();
        py::gil_scoped_release release;
        return ContentPulse(data, frames, bands, frame_rate);
      },
      py::arg("frames_db"), py::arg("frame_rate"),
      "The pulse of a span of content frames (frames x bands, dB power; the last PULSE_SECONDS "
      "of a stream): the strongest autocorrelation of their onset envelope at lags of 0.3-1.5 "
      "s, 0 without one.");
}

}  // namespace python
}  // namespace streamtag
