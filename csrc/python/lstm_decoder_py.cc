// lstm_decoder.h: LstmDecoder, silero-vad's recurrent decoder for many streams at once.
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.h"
#include "lstm_decoder.h"

namespace streamtag {
namespace python {

void BindLstmDecoder(py::module_ &m) {
  using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
  using MaskArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
  py::class_<LstmDecoder>(m, "LstmDecoder",
                          "silero-vad's recurrent decoder (an LSTM cell, gates i, f, o, g; a "
                          "ReLU; one logit; a sigmoid), step by step for many streams.")
      .def(py::init([](const FloatArray &recurrent, const FloatArray &out, float out_bias) {
             if (recurrent.ndim() != 2 || recurrent.shape(1) != 4 * recurrent.shape(0)) {
               throw std::invalid_argument("recurrent must be a 2-D array (units, 4 units)");
             }
             if (out.ndim() != 1) throw std::invalid_argument("out must be 1-D (units,)");
             std::vector<float> r(recurrent.data(), recurrent.data() + recurrent.size());
             std::vector<float> o(out.data(), out.data() + out.size());
             return new LstmDecoder(r, o, out_bias, int(recurrent.shape(0)));
           }),
           py::arg("recurrent"), py::arg("out"), py::arg("out_bias"))
      .def(
          "run",
          [](const LstmDecoder &self, const FloatArray &projected, const Int64Array &counts,
             const MaskArray &reset, const FloatArray &state) {
            const int64_t units = self.Units();
            if (state.ndim() != 3 || state.shape(0) != 2 || state.shape(2) != units) {
              throw std::invalid_argument("state must be a 3-D array (2, streams, " +
                                          std::to_string(units) + ")");
            }
            if (counts.ndim() != 1) throw std::invalid_argument("counts must be 1-D (steps,)");
            int64_t rows = 0;
            for (int64_t k = 0; k < counts.shape(0); ++k) rows += counts.data()[k];
            if (projected.ndim() != 2 || projected.shape(0) != rows ||
                projected.shape(1) != 4 * units) {
              throw std::invalid_argument("projected must be a 2-D array (" +
                                          std::to_string(rows) + " rows, the counts' sum, " +
                                          std::to_string(4 * units) + ")");
            }
            if (reset.ndim() != 1 || reset.shape(0) != rows) {
              throw std::invalid_argument("reset must be 1-D, one flag a row");
            }
            py::array_t<float> next({py::ssize_t(2), state.shape(1), py::ssize_t(units)});
            std::copy(state.data(), state.data() + state.size(), next.mutable_data());
            py::array_t<float> probs(rows);
            const float *p = projected.data();
            const int64_t *c = counts.data();
            const uint8_t *r = reset.data();
            float *s = next.mutable_data(), *out = probs.mutable_data();
            const int64_t steps = counts.shape(0), streams = state.shape(1);
            {
              py::gil_scoped_release release;
              self.Run(p, c, steps, r, s, streams, out);
            }
            return py::make_tuple(probs, next);
          },
          py::arg("projected"), py::arg("counts"), py::arg("reset"), py::arg("state"),
          "(probs of each row, the next state) of counts[k] streams at step k, from state "
          "(2, streams, units); a row whose reset flag is set starts from zeros.");
}

}  // namespace python
}  // namespace streamtag
