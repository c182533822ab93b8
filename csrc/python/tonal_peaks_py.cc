// tonal_peaks.h: tonal_features, the window features of the tonal rows OnlineLogMel keeps.
#include "bindings.h"
#include "tonal_peaks.h"

namespace streamtag {
namespace python {

void BindTonalPeaks(py::module_ &m) {
  py::tuple names(kTonalFeatureCount);
  for (int i = 0; i < kTonalFeatureCount; ++i) names[i] = kTonalFeatureNames[i];
  m.attr("TONAL_FEATURES") = names;
  m.attr("TONAL_ROW_SIZE") = kTonalRowSize;
  m.def(
      "tonal_features",
      [](const FloatArray &rows) {
        if (rows.ndim() != 2 || rows.shape(1) != kTonalRowSize) {
          throw std::invalid_argument(
              "rows must be a 2-D array (frames, 4) of tonal rows, as OnlineLogMel.pop_tonal "
              "gives them");
        }
        const float *data = rows.data();
        const int64_t n = rows.shape(0);
        py::array_t<double> out(kTonalFeatureCount);
        double *dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          TonalWindowFeatures(data, n, dst);
        }
        return out;
      },
      py::arg("rows"),
      "The tonal features (TONAL_FEATURES) of one window's tonal rows (frames x 4: band power, "
      "peaks, stable peaks, their power), as OnlineLogMel.pop_tonal gives them.");
}

}  // namespace python
}  // namespace streamtag
