// fft.h: rfft, our own real-input transform, for the tests.
#include <complex>
#include <vector>

#include "bindings.h"
#include "fft.h"

namespace streamtag {
namespace python {

void BindFft(py::module_ &m) {
  m.def(
      "rfft",
      [](const FloatArray &x) {
        const float *data = Mono(x);
        RealFft fft(static_cast<int>(x.shape(0)));
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
}

}  // namespace python
}  // namespace streamtag
