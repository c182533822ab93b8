#include "json_numbers.h"

#include <charconv>
#include <cmath>
#include <cstdlib>  // std::abs
#include <stdexcept>

namespace streamtag {

void AppendFloatRepr(double x, std::string &out) {
  // std::to_chars gives the shortest digits that read back to x (the nearest such string when
  // several are as short), as Python's repr does; only the layout differs. Python writes the
  // digits d1 d2 ... dn with an exponent when the decimal exponent e is below -4 or at least
  // 16 ("1e-05", "1.5e+16"), and in positional form otherwise, with ".0" when no fraction
  // remains ("0.0001", "12.5", "3.0").
  char buf[40];
  const std::to_chars_result r =
      std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  const char *p = buf;
  if (*p == '-') {
    out.push_back('-');
    ++p;
  }
  char digits[24];
  int n = 0;
  for (; p < r.ptr && *p != 'e'; ++p) {
    if (*p != '.') digits[n++] = *p;
  }
  // p is at 'e', then a sign and two or three digits; to_chars writes no terminating NUL
  int e = 0;
  for (const char *q = p + 2; q < r.ptr; ++q) e = e * 10 + (*q - '0');
  if (p[1] == '-') e = -e;
  if (e < -4 || e >= 16) {
    out.push_back(digits[0]);
    if (n > 1) {
      out.push_back('.');
      out.append(digits + 1, n - 1);
    }
    out.push_back('e');
    out.push_back(e < 0 ? '-' : '+');
    const int a = std::abs(e);
    if (a >= 100) out.push_back(static_cast<char>('0' + a / 100));
    out.push_back(static_cast<char>('0' + a / 10 % 10));
    out.push_back(static_cast<char>('0' + a % 10));
  } else if (e < 0) {
    out.append("0.");
    out.append(static_cast<size_t>(-e - 1), '0');
    out.append(digits, n);
  } else if (e + 1 < n) {
    out.append(digits, e + 1);
    out.push_back('.');
    out.append(digits + e + 1, n - e - 1);
  } else {
    out.append(digits, n);
    out.append(static_cast<size_t>(e + 1 - n), '0');
    out.append(".0");
  }
}

namespace {

// The value numpy.round(x, decimals) gives: x * 10^decimals, rounded to the nearest integer
// (ties to even), divided by 10^decimals. decimals: 0 to 15, checked by the caller.
double RoundToDecimals(double x, int decimals) {
  static const double kPowers[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
  const double scale = kPowers[decimals];
  return std::nearbyint(x * scale) / scale;
}

}  // namespace

bool RoundedJsonArray(const double *values, size_t n, int decimals, std::string &out) {
  if (decimals < 0 || decimals > 15) {
    throw std::invalid_argument("decimals must be 0 to 15, got " + std::to_string(decimals));
  }
  out.clear();
  out.reserve(2 + n * 10);
  out.push_back('[');
  for (size_t i = 0; i < n; ++i) {
    const double v = RoundToDecimals(values[i], decimals);
    if (!std::isfinite(v)) return false;
    if (i > 0) out.push_back(',');
    AppendFloatRepr(v, out);
  }
  out.push_back(']');
  return true;
}

}  // namespace streamtag
