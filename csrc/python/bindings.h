// What the binding files share: one Bind<Header> per header of the core, each mirroring its
// header in snake_case, and the array type they take. Compute-heavy calls release the GIL; each
// binding-side object holds a mutex so that two Python threads sharing one instance serialise
// instead of racing, while different instances run in parallel.
#ifndef STREAMTAG_PYTHON_BINDINGS_H_
#define STREAMTAG_PYTHON_BINDINGS_H_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
// In every binding file alike: type casters that differ between files break the ODR.
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

namespace streamtag {
namespace python {

namespace py = pybind11;

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// The samples of a 1-D array; throws std::invalid_argument (ValueError) for any other shape.
inline const float *Mono(const FloatArray &x) {
  if (x.ndim() != 1) {
    throw std::invalid_argument("audio must be 1-D (mono samples), got an array with " +
                                std::to_string(x.ndim()) +
                                " dimensions; mix channels down first");
  }
  return x.data();
}

// A class must be bound before a signature names it, or its docstring shows the C++ name:
// core_module.cc calls these in an order that respects that.
void BindWindowLevel(py::module_ &m);    // window_level.h
void BindLogMelOptions(py::module_ &m);  // log_mel_options.h
void BindOnlineLogMel(py::module_ &m);   // online_log_mel.h
void BindMelFilterbank(py::module_ &m);  // mel_filterbank.h
void BindFft(py::module_ &m);            // fft.h
void BindJsonNumbers(py::module_ &m);    // json_numbers.h
void BindLoudnessMeter(py::module_ &m);  // loudness_meter.h
void BindFrameRing(py::module_ &m);      // frame_ring.h
void BindContentFeatures(py::module_ &m);  // content_features.h
void BindReflectedStft(py::module_ &m);  // reflected_stft.h
void BindLstmDecoder(py::module_ &m);    // lstm_decoder.h
void BindTonalPeaks(py::module_ &m);     // tonal_peaks.h
void BindPitchTrack(py::module_ &m);     // pitch_track.h

}  // namespace python
}  // namespace streamtag

#endif  // STREAMTAG_PYTHON_BINDINGS_H_
