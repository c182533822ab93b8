// mel_filterbank.h: mel_filterbank, the dense (n_mels, n_fft / 2 + 1) weights.
#include <algorithm>
#include <vector>

#include "bindings.h"
#include "log_mel_options.h"
#include "mel_filterbank.h"

namespace streamtag {
namespace python {

void BindMelFilterbank(py::module_ &m) {
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
}

}  // namespace python
}  // namespace streamtag
