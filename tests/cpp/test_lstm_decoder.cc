// lstm_decoder.h: the approximate exp, sigmoid and tanh against the exact functions, and the
// decoder against a plain LSTM cell in double precision, with streams dropping out and resets.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "lstm_decoder.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestFunctions() {
  std::vector<float> x;
  for (int i = -200000; i <= 200000; ++i) x.push_back(float(i) * 1e-4f);  // -20 .. 20
  for (float v : {-1e30f, -100.0f, -80.0f, 80.0f, 100.0f, 1e30f}) x.push_back(v);
  const int64_t n = int64_t(x.size());  // not a multiple of 8: the tail too
  std::vector<float> e(n), s(n), t(n);
  ApproximateExp(x.data(), n, e.data());
  ApproximateSigmoid(x.data(), n, s.data());
  ApproximateTanh(x.data(), n, t.data());
  double exp_rel = 0, sigmoid_abs = 0, tanh_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = std::fmax(-80.0, std::fmin(80.0, double(x[i])));
    exp_rel = std::fmax(exp_rel, std::fabs(e[i] - std::exp(v)) / std::exp(v));
    sigmoid_abs = std::fmax(sigmoid_abs, std::fabs(s[i] - 1.0 / (1.0 + std::exp(-v))));
    tanh_abs = std::fmax(tanh_abs, std::fabs(t[i] - std::tanh(v)));
  }
  Check(exp_rel < 5e-7, "exp within 5e-7 of its value: " + std::to_string(exp_rel));
  Check(sigmoid_abs < 2e-7, "sigmoid within 2e-7: " + std::to_string(sigmoid_abs));
  Check(tanh_abs < 4e-7, "tanh within 4e-7: " + std::to_string(tanh_abs));
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void TestAgainstAPlainCell() {
  const int units = 64, streams = 7;
  const std::vector<float> recurrent = Noise(size_t(units) * 4 * units, 1);
  const std::vector<float> out = Noise(units, 2);
  const float bias = 0.25f;
  LstmDecoder decoder(recurrent, out, bias, units);
  const std::vector<int64_t> counts = {7, 7, 6, 5, 5, 1};  // every block size, and one left
  int64_t rows = 0;
  for (int64_t c : counts) rows += c;
  std::vector<float> projected = Noise(size_t(rows) * 4 * units, 3);
  for (float &v : projected) v *= 4.0f;  // gates well into the sigmoids' tails
  std::vector<uint8_t> reset(rows, 0);
  reset[9] = reset[20] = 1;  // stream 2 at step 1, stream 1 at step 3
  std::vector<float> state = Noise(size_t(2) * streams * units, 4);
  std::vector<double> h(state.begin(), state.begin() + streams * units);
  std::vector<double> c(state.begin() + streams * units, state.end());
  std::vector<float> probs(rows);
  decoder.Run(projected.data(), counts.data(), int64_t(counts.size()), reset.data(),
              state.data(), streams, probs.data());
  double worst = 0;
  int64_t row = 0;
  for (int64_t k = 0; k < int64_t(counts.size()); ++k) {
    for (int64_t s = 0; s < counts[k]; ++s, ++row) {
      double *hs = &h[s * units], *cs = &c[s * units];
      if (reset[row]) {
        for (int u = 0; u < units; ++u) hs[u] = cs[u] = 0.0;
      }
      std::vector<double> g(4 * units);
      for (int j = 0; j < 4 * units; ++j) {
        g[j] = projected[row * 4 * units + j];
        for (int i = 0; i < units; ++i) g[j] += hs[i] * recurrent[size_t(i) * 4 * units + j];
      }
      double logit = bias;
      for (int u = 0; u < units; ++u) {  // gates i, f, o, g
        cs[u] = Sigmoid(g[units + u]) * cs[u] + Sigmoid(g[u]) * std::tanh(g[3 * units + u]);
        hs[u] = Sigmoid(g[2 * units + u]) * std::tanh(cs[u]);
        logit += std::fmax(hs[u], 0.0) * out[u];
      }
      worst = std::fmax(worst, std::fabs(probs[row] - Sigmoid(logit)));
    }
  }
  for (int64_t i = 0; i < streams * units; ++i) {
    worst = std::fmax(worst, std::fabs(state[i] - h[i]));
    worst = std::fmax(worst, std::fabs(state[streams * units + i] - c[i]));
  }
  Check(row == rows, "every row run");
  Check(worst < 1e-5, "probabilities and state within 1e-5 of the plain cell's: " +
                          std::to_string(worst));
}

void TestErrors() {
  CheckThrows<std::invalid_argument>(
      [] { LstmDecoder(std::vector<float>(24 * 96), std::vector<float>(24), 0.0f, 24); },
      "units not a multiple of 32");
  CheckThrows<std::invalid_argument>(
      [] { LstmDecoder(std::vector<float>(32 * 100), std::vector<float>(32), 0.0f, 32); },
      "recurrent weights of the wrong size");
  LstmDecoder decoder(std::vector<float>(32 * 128), std::vector<float>(32), 0.0f, 32);
  std::vector<float> projected(3 * 128), state(2 * 2 * 32), probs(3);
  std::vector<uint8_t> reset(3);
  const std::vector<int64_t> rising = {1, 2}, too_many = {3};
  CheckThrows<std::invalid_argument>(
      [&] { decoder.Run(projected.data(), rising.data(), 2, reset.data(), state.data(), 2,
                        probs.data()); },
      "counts rising");
  CheckThrows<std::invalid_argument>(
      [&] { decoder.Run(projected.data(), too_many.data(), 1, reset.data(), state.data(), 2,
                        probs.data()); },
      "more streams than the state holds");
}

}  // namespace

int main() {
  TestFunctions();
  TestAgainstAPlainCell();
  TestErrors();
  return Summary("test_lstm_decoder");
}
