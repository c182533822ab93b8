#include "fft.h"

#include "simd.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace streamtag {

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Radices in the order the stages use them: fours first (fewest passes), then the rest.
std::vector<int> Factorize(int n) {
  std::vector<int> radices;
  while (n % 4 == 0) {
    radices.push_back(4);
    n /= 4;
  }
  while (n % 2 == 0) {
    radices.push_back(2);
    n /= 2;
  }
  for (int p = 3; n > 1; p += 2) {
    if (static_cast<long long>(p) * p > n) p = n;  // n is prime now
    while (n % p == 0) {
      radices.push_back(p);
      n /= p;
    }
  }
  return radices;
}


using simd::V4;

// a * w for complex vectors in split form.
inline void Twiddle(V4 ar, V4 ai, V4 wr, V4 wi, float *out_r, float *out_i) {
  simd::Store(out_r, ar * wr - ai * wi);
  simd::Store(out_i, ar * wi + ai * wr);
}

// The radix-4 butterfly of four complex vectors; results replace the inputs.
inline void Butterfly4(V4 &x0r, V4 &x0i, V4 &x1r, V4 &x1i, V4 &x2r, V4 &x2i, V4 &x3r,
                       V4 &x3i) {
  const V4 t0r = x0r + x2r, t0i = x0i + x2i, t1r = x0r - x2r, t1i = x0i - x2i;
  const V4 t2r = x1r + x3r, t2i = x1i + x3i, t3r = x1r - x3r, t3i = x1i - x3i;
  x0r = t0r + t2r;
  x0i = t0i + t2i;
  x1r = t1r + t3i;  // t1 - i t3
  x1i = t1i - t3r;
  x2r = t0r - t2r;
  x2i = t0i - t2i;
  x3r = t1r - t3i;  // t1 + i t3
  x3i = t1i + t3r;
}

// Radix-4 pass with stride s a multiple of 4: four q at a time, twiddles broadcast.
void RadixFourStage(int m, int s, const float *twr, const float *twi, const float *__restrict xr,
                    const float *__restrict xi, float *__restrict yr, float *__restrict yi) {
  const int sm = s * m;
  for (int p = 0; p < m; ++p) {
    const V4 w1r = simd::Splat(twr[p]), w1i = simd::Splat(twi[p]);
    const V4 w2r = simd::Splat(twr[m + p]), w2i = simd::Splat(twi[m + p]);
    const V4 w3r = simd::Splat(twr[2 * m + p]), w3i = simd::Splat(twi[2 * m + p]);
    const float *ar = xr + s * p, *ai = xi + s * p;
    float *br = yr + 4 * s * p, *bi = yi + 4 * s * p;
    for (int q = 0; q < s; q += 4) {
      V4 x0r = simd::Load(ar + q), x0i = simd::Load(ai + q);
      V4 x1r = simd::Load(ar + sm + q), x1i = simd::Load(ai + sm + q);
      V4 x2r = simd::Load(ar + 2 * sm + q), x2i = simd::Load(ai + 2 * sm + q);
      V4 x3r = simd::Load(ar + 3 * sm + q), x3i = simd::Load(ai + 3 * sm + q);
      Butterfly4(x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i);
      simd::Store(br + q, x0r);
      simd::Store(bi + q, x0i);
      Twiddle(x1r, x1i, w1r, w1i, br + s + q, bi + s + q);
      Twiddle(x2r, x2i, w2r, w2i, br + 2 * s + q, bi + 2 * s + q);
      Twiddle(x3r, x3i, w3r, w3i, br + 3 * s + q, bi + 3 * s + q);
    }
  }
}

// The first radix-4 pass (stride 1): four p at a time, the outputs y[4p + k] transposed into
// place.
void RadixFourFirstStage(int m, const float *twr, const float *twi, const float *__restrict xr,
                         const float *__restrict xi, float *__restrict yr,
                         float *__restrict yi) {
  for (int p = 0; p < m; p += 4) {
    V4 x0r = simd::Load(xr + p), x0i = simd::Load(xi + p);
    V4 x1r = simd::Load(xr + m + p), x1i = simd::Load(xi + m + p);
    V4 x2r = simd::Load(xr + 2 * m + p), x2i = simd::Load(xi + 2 * m + p);
    V4 x3r = simd::Load(xr + 3 * m + p), x3i = simd::Load(xi + 3 * m + p);
    Butterfly4(x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i);
    V4 y0r = x0r, y0i = x0i;
    V4 y1r, y1i, y2r, y2i, y3r, y3i;
    {
      const V4 wr = simd::Load(twr + p), wi = simd::Load(twi + p);
      y1r = x1r * wr - x1i * wi;
      y1i = x1r * wi + x1i * wr;
    }
    {
      const V4 wr = simd::Load(twr + m + p), wi = simd::Load(twi + m + p);
      y2r = x2r * wr - x2i * wi;
      y2i = x2r * wi + x2i * wr;
    }
    {
      const V4 wr = simd::Load(twr + 2 * m + p), wi = simd::Load(twi + 2 * m + p);
      y3r = x3r * wr - x3i * wi;
      y3i = x3r * wi + x3i * wr;
    }
    simd::Transpose(y0r, y1r, y2r, y3r);
    simd::Transpose(y0i, y1i, y2i, y3i);
    float *br = yr + 4 * p, *bi = yi + 4 * p;
    simd::Store(br, y0r);
    simd::Store(br + 4, y1r);
    simd::Store(br + 8, y2r);
    simd::Store(br + 12, y3r);
    simd::Store(bi, y0i);
    simd::Store(bi + 4, y1i);
    simd::Store(bi + 8, y2i);
    simd::Store(bi + 12, y3i);
  }
}


// The radix-4 pass of four side-by-side transforms, twiddles already broadcast to all lanes
// (tw holds (w1r, w1i, w2r, w2i, w3r, w3i) per p). The same expressions as ScalarStage.
void RadixFourStage4(int m, int s, const V4 *tw, const V4 *__restrict xr,
                     const V4 *__restrict xi, V4 *__restrict yr, V4 *__restrict yi) {
  const int sm = s * m;
  for (int p = 0; p < m; ++p, tw += 6) {
    const V4 *ar = xr + s * p, *ai = xi + s * p;
    V4 *br = yr + 4 * s * p, *bi = yi + 4 * s * p;
    for (int q = 0; q < s; ++q) {
      V4 x0r = ar[q], x0i = ai[q], x1r = ar[sm + q], x1i = ai[sm + q];
      V4 x2r = ar[2 * sm + q], x2i = ai[2 * sm + q], x3r = ar[3 * sm + q], x3i = ai[3 * sm + q];
      Butterfly4(x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i);
      br[q] = x0r;
      bi[q] = x0i;
      br[s + q] = x1r * tw[0] - x1i * tw[1];
      bi[s + q] = x1r * tw[1] + x1i * tw[0];
      br[2 * s + q] = x2r * tw[2] - x2i * tw[3];
      bi[2 * s + q] = x2r * tw[3] + x2i * tw[2];
      br[3 * s + q] = x3r * tw[4] - x3i * tw[5];
      bi[3 * s + q] = x3r * tw[5] + x3i * tw[4];
    }
  }
}
}  // namespace

ComplexFft::ComplexFft(int n)
    : n_(n), work_re_(n), work_im_(n), work4_re_(n), work4_im_(n) {
  if (n < 1) throw std::invalid_argument("FFT size must be >= 1, got " + std::to_string(n));
  int length = n, stride = 1;
  for (int radix : Factorize(n)) {
    Stage st;
    st.radix = radix;
    st.length = length;
    st.stride = stride;
    const int m = length / radix;
    st.tw_re.resize(static_cast<size_t>(radix - 1) * m);
    st.tw_im.resize(st.tw_re.size());
    for (int k = 1; k < radix; ++k) {
      for (int p = 0; p < m; ++p) {
        // Reduce the exponent first so the angle stays small and exact.
        const long long e = (static_cast<long long>(p) * k) % length;
        const double angle = -kTwoPi * static_cast<double>(e) / length;
        st.tw_re[(k - 1) * m + p] = static_cast<float>(std::cos(angle));
        st.tw_im[(k - 1) * m + p] = static_cast<float>(std::sin(angle));
      }
    }
    if (radix > 4 && static_cast<int>(generic_re_.size()) <= radix) {
      generic_re_.resize(radix + 1);
      generic_im_.resize(radix + 1);
    }
    if (radix > 4 && generic_re_[radix].empty()) {
      generic_re_[radix].resize(radix * radix);
      generic_im_[radix].resize(radix * radix);
      for (int j = 0; j < radix; ++j) {
        for (int k = 0; k < radix; ++k) {
          const double angle = -kTwoPi * static_cast<double>((j * k) % radix) / radix;
          generic_re_[radix][j * radix + k] = static_cast<float>(std::cos(angle));
          generic_im_[radix][j * radix + k] = static_cast<float>(std::sin(angle));
        }
      }
    }
    if (radix == 4) {
      st.tw4.reserve(6 * static_cast<size_t>(m));
      for (int p = 0; p < m; ++p) {
        for (int k = 0; k < 3; ++k) {
          st.tw4.push_back(simd::Splat(st.tw_re[k * m + p]));
          st.tw4.push_back(simd::Splat(st.tw_im[k * m + p]));
        }
      }
    }
    stages_.push_back(std::move(st));
    length = m;
    stride *= radix;
  }
}

// One decimation-in-frequency Stockham pass: for every p < m and q < s, the radix-r DFT of
// x[q + s (p + j m)], j < r, twiddled by W_length^(p k), lands at y[q + s (r p + k)].
//
// T is float (one transform) or simd::V4 (four transforms side by side, one per lane). Every
// path, the vectorised ones below included, evaluates the same expression for each element, so
// a frame's spectrum is bitwise the same whichever path computed it (built with
// -ffp-contract=off so that no path fuses a multiply-add).
template <typename T>
void ScalarStage(int r, int s, int m, const float *twr, const float *twi, const float *gr,
                 const float *gi, const T *__restrict xr, const T *__restrict xi,
                 T *__restrict yr, T *__restrict yi) {
  if (r == 4) {
    for (int p = 0; p < m; ++p) {
      const float w1r = twr[p], w1i = twi[p];
      const float w2r = twr[m + p], w2i = twi[m + p];
      const float w3r = twr[2 * m + p], w3i = twi[2 * m + p];
      for (int q = 0; q < s; ++q) {
        const T x0r = xr[q + s * p], x0i = xi[q + s * p];
        const T x1r = xr[q + s * (p + m)], x1i = xi[q + s * (p + m)];
        const T x2r = xr[q + s * (p + 2 * m)], x2i = xi[q + s * (p + 2 * m)];
        const T x3r = xr[q + s * (p + 3 * m)], x3i = xi[q + s * (p + 3 * m)];
        const T t0r = x0r + x2r, t0i = x0i + x2i, t1r = x0r - x2r, t1i = x0i - x2i;
        const T t2r = x1r + x3r, t2i = x1i + x3i, t3r = x1r - x3r, t3i = x1i - x3i;
        const T b1r = t1r + t3i, b1i = t1i - t3r;  // t1 - i t3
        const T b2r = t0r - t2r, b2i = t0i - t2i;
        const T b3r = t1r - t3i, b3i = t1i + t3r;  // t1 + i t3
        T *y0r = yr + q + s * 4 * p, *y0i = yi + q + s * 4 * p;
        y0r[0] = t0r + t2r;
        y0i[0] = t0i + t2i;
        y0r[s] = b1r * w1r - b1i * w1i;
        y0i[s] = b1r * w1i + b1i * w1r;
        y0r[2 * s] = b2r * w2r - b2i * w2i;
        y0i[2 * s] = b2r * w2i + b2i * w2r;
        y0r[3 * s] = b3r * w3r - b3i * w3i;
        y0i[3 * s] = b3r * w3i + b3i * w3r;
      }
    }
  } else if (r == 2) {
    for (int p = 0; p < m; ++p) {
      const float wr = twr[p], wi = twi[p];
      for (int q = 0; q < s; ++q) {
        const T x0r = xr[q + s * p], x0i = xi[q + s * p];
        const T x1r = xr[q + s * (p + m)], x1i = xi[q + s * (p + m)];
        const T dr = x0r - x1r, di = x0i - x1i;
        yr[q + s * 2 * p] = x0r + x1r;
        yi[q + s * 2 * p] = x0i + x1i;
        yr[q + s * (2 * p + 1)] = dr * wr - di * wi;
        yi[q + s * (2 * p + 1)] = dr * wi + di * wr;
      }
    }
  } else if (r == 3) {
    const float h = 0.86602540378443864676f;  // sin(2 pi / 3)
    for (int p = 0; p < m; ++p) {
      const float w1r = twr[p], w1i = twi[p];
      const float w2r = twr[m + p], w2i = twi[m + p];
      for (int q = 0; q < s; ++q) {
        const T x0r = xr[q + s * p], x0i = xi[q + s * p];
        const T x1r = xr[q + s * (p + m)], x1i = xi[q + s * (p + m)];
        const T x2r = xr[q + s * (p + 2 * m)], x2i = xi[q + s * (p + 2 * m)];
        const T tr = x1r + x2r, ti = x1i + x2i;
        const T dr = x1r - x2r, di = x1i - x2i;
        const T cr = x0r - 0.5f * tr, ci = x0i - 0.5f * ti;
        const T b1r = cr + h * di, b1i = ci - h * dr;
        const T b2r = cr - h * di, b2i = ci + h * dr;
        T *y0r = yr + q + s * 3 * p, *y0i = yi + q + s * 3 * p;
        y0r[0] = x0r + tr;
        y0i[0] = x0i + ti;
        y0r[s] = b1r * w1r - b1i * w1i;
        y0i[s] = b1r * w1i + b1i * w1r;
        y0r[2 * s] = b2r * w2r - b2i * w2i;
        y0i[2 * s] = b2r * w2i + b2i * w2r;
      }
    }
  } else {
    // Any other prime: a direct DFT of length r, O(r^2) per butterfly but exact.
    for (int p = 0; p < m; ++p) {
      for (int q = 0; q < s; ++q) {
        for (int k = 0; k < r; ++k) {
          T accr{}, acci{};
          for (int j = 0; j < r; ++j) {
            const T ar = xr[q + s * (p + j * m)], ai = xi[q + s * (p + j * m)];
            const float cr = gr[j * r + k], ci = gi[j * r + k];
            accr += ar * cr - ai * ci;
            acci += ar * ci + ai * cr;
          }
          T outr = accr, outi = acci;
          if (k > 0) {
            const float wr = twr[(k - 1) * m + p], wi = twi[(k - 1) * m + p];
            outr = accr * wr - acci * wi;
            outi = accr * wi + acci * wr;
          }
          yr[q + s * (r * p + k)] = outr;
          yi[q + s * (r * p + k)] = outi;
        }
      }
    }
  }
}

void ComplexFft::RunStage(const Stage &st, const float *__restrict xr,
                          const float *__restrict xi, float *__restrict yr,
                          float *__restrict yi) const {
  const int r = st.radix, s = st.stride, m = st.length / r;
  const float *twr = st.tw_re.data(), *twi = st.tw_im.data();
  if (r == 4 && s == 1 && m % 4 == 0) {
    RadixFourFirstStage(m, twr, twi, xr, xi, yr, yi);
  } else if (r == 4 && s % 4 == 0) {
    RadixFourStage(m, s, twr, twi, xr, xi, yr, yi);
  } else {
    const float *gr = r > 4 ? generic_re_[r].data() : nullptr;
    const float *gi = r > 4 ? generic_im_[r].data() : nullptr;
    ScalarStage<float>(r, s, m, twr, twi, gr, gi, xr, xi, yr, yi);
  }
}

std::pair<const V4 *, const V4 *> ComplexFft::Forward4(V4 *re, V4 *im) {
  V4 *xr = re, *xi = im, *yr = work4_re_.data(), *yi = work4_im_.data();
  for (const Stage &st : stages_) {
    const int r = st.radix;
    if (r == 4) {
      RadixFourStage4(st.length / 4, st.stride, st.tw4.data(), xr, xi, yr, yi);
    } else {
      const float *gr = r > 4 ? generic_re_[r].data() : nullptr;
      const float *gi = r > 4 ? generic_im_[r].data() : nullptr;
      ScalarStage<V4>(r, st.stride, st.length / r, st.tw_re.data(), st.tw_im.data(), gr, gi,
                      xr, xi, yr, yi);
    }
    std::swap(xr, yr);
    std::swap(xi, yi);
  }
  return {xr, xi};
}

void ComplexFft::Forward(float *re, float *im) {
  float *xr = re, *xi = im, *yr = work_re_.data(), *yi = work_im_.data();
  for (const Stage &st : stages_) {
    RunStage(st, xr, xi, yr, yi);
    std::swap(xr, yr);
    std::swap(xi, yi);
  }
  if (xr != re) {  // an odd number of stages left the result in the scratch buffers
    for (int i = 0; i < n_; ++i) {
      re[i] = xr[i];
      im[i] = xi[i];
    }
  }
}

RealFft::RealFft(int n)
    : n_(n), even_(n % 2 == 0), half_(n >= 2 ? (n % 2 == 0 ? n / 2 : n) : 1) {
  if (n < 2) throw std::invalid_argument("real FFT size must be >= 2, got " + std::to_string(n));
  z_re_.resize(half_.Size());
  z4_re_.resize(half_.Size());
  z4_im_.resize(half_.Size());
  z_im_.resize(half_.Size());
  w_re_.resize(n / 2 + 1);
  w_im_.resize(n / 2 + 1);
  for (int k = 0; k <= n / 2; ++k) {
    const double angle = -kTwoPi * k / n;
    w_re_[k] = static_cast<float>(std::cos(angle));
    w_im_[k] = static_cast<float>(std::sin(angle));
  }
}

void RealFft::Forward(const float *in, float *out_re, float *out_im) {
  float *zr = z_re_.data(), *zi = z_im_.data();
  if (!even_) {
    for (int i = 0; i < n_; ++i) {
      zr[i] = in[i];
      zi[i] = 0.0f;
    }
    half_.Forward(zr, zi);
    for (int k = 0; k <= n_ / 2; ++k) {
      out_re[k] = zr[k];
      out_im[k] = zi[k];
    }
    return;
  }
  // Pack even samples as real and odd samples as imaginary parts, transform at half size, then
  // separate the two spectra: X[k] = E[k] + W_n^k O[k].
  const int m = n_ / 2;
  int k = 0;
  for (; k + 4 <= m; k += 4) {
    const V4 a = simd::Load(in + 2 * k), b = simd::Load(in + 2 * k + 4);
    simd::Store(zr + k, STREAMTAG_SHUFFLE(a, b, 0, 2, 4, 6));
    simd::Store(zi + k, STREAMTAG_SHUFFLE(a, b, 1, 3, 5, 7));
  }
  for (; k < m; ++k) {
    zr[k] = in[2 * k];
    zi[k] = in[2 * k + 1];
  }
  half_.Forward(zr, zi);
  out_re[0] = zr[0] + zi[0];
  out_im[0] = 0.0f;
  out_re[m] = zr[0] - zi[0];
  out_im[m] = 0.0f;
  const float *wr = w_re_.data(), *wi = w_im_.data();
  // Four k at a time; Z[m - k] is read backwards and reversed.
  k = 1;
  for (; k + 4 <= m; k += 4) {
    const V4 ar = simd::Load(zr + k), ai = simd::Load(zi + k);
    const V4 cr = simd::Reverse(simd::Load(zr + m - k - 3));
    const V4 ci = simd::Reverse(simd::Load(zi + m - k - 3));
    const V4 half = simd::Splat(0.5f);
    const V4 er = half * (ar + cr), ei = half * (ai - ci);
    const V4 or_ = half * (ai + ci), oi = -half * (ar - cr);
    const V4 w_r = simd::Load(wr + k), w_i = simd::Load(wi + k);
    simd::Store(out_re + k, er + w_r * or_ - w_i * oi);
    simd::Store(out_im + k, ei + w_r * oi + w_i * or_);
  }
  for (; k < m; ++k) {
    const float ar = zr[k], ai = zi[k];
    const float cr = zr[m - k], ci = zi[m - k];
    const float er = 0.5f * (ar + cr), ei = 0.5f * (ai - ci);
    const float or_ = 0.5f * (ai + ci), oi = -0.5f * (ar - cr);
    out_re[k] = er + wr[k] * or_ - wi[k] * oi;
    out_im[k] = ei + wr[k] * oi + wi[k] * or_;
  }
}

void RealFft::Forward4(const V4 *in, V4 *out_re, V4 *out_im) {
  V4 *zr = z4_re_.data(), *zi = z4_im_.data();
  if (!even_) {
    for (int i = 0; i < n_; ++i) {
      zr[i] = in[i];
      zi[i] = V4{};
    }
    const auto z = half_.Forward4(zr, zi);
    std::copy(z.first, z.first + n_ / 2 + 1, out_re);
    std::copy(z.second, z.second + n_ / 2 + 1, out_im);
    return;
  }
  const int m = n_ / 2;
  for (int k = 0; k < m; ++k) {
    zr[k] = in[2 * k];
    zi[k] = in[2 * k + 1];
  }
  const auto z = half_.Forward4(zr, zi);
  const V4 *fr = z.first, *fi = z.second;
  const V4 zero = simd::Splat(0.0f);
  out_re[0] = fr[0] + fi[0];
  out_im[0] = zero;
  out_re[m] = fr[0] - fi[0];
  out_im[m] = zero;
  for (int k = 1; k < m; ++k) {
    const V4 ar = fr[k], ai = fi[k];
    const V4 cr = fr[m - k], ci = fi[m - k];
    const V4 er = 0.5f * (ar + cr), ei = 0.5f * (ai - ci);
    const V4 or_ = 0.5f * (ai + ci), oi = -0.5f * (ar - cr);
    out_re[k] = er + w_re_[k] * or_ - w_im_[k] * oi;
    out_im[k] = ei + w_re_[k] * oi + w_im_[k] * or_;
  }
}

}  // namespace streamtag
