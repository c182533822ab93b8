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

namespace streamtag {

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The end of the JSON number at p whose spelling is a float's (a fraction or an exponent, or
// both), or nullptr.
const char *FloatToken(const char *p, const char *end) {
  const char *q = p;
  if (q < end && *q == '-') ++q;
  if (q >= end || !IsDigit(*q)) return nullptr;
  if (*q == '0') {
    ++q;
  } else {
    while (q < end && IsDigit(*q)) ++q;
  }
  bool is_float = false;
  if (q < end && *q == '.') {
    ++q;
    if (q >= end || !IsDigit(*q)) return nullptr;
    while (q < end && IsDigit(*q)) ++q;
    is_float = true;
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    ++q;
    if (q < end && (*q == '+' || *q == '-')) ++q;
    if (q >= end || !IsDigit(*q)) return nullptr;
    while (q < end && IsDigit(*q)) ++q;
    is_float = true;
  }
  return is_float ? q : nullptr;
}

}  // namespace

const char *ReadFloatArray(const char *p, const char *end, std::vector<double> &out) {
  if (p >= end || *p != '[') return nullptr;
  ++p;
  while (true) {
    const char *token_end = FloatToken(p, end);
    if (token_end == nullptr) return nullptr;
    double value = 0.0;
    // from_chars reads as strtod does, correctly rounded, without the locale; it sets
    // result_out_of_range for a value past a double's range either way (1e400, 1e-400), which
    // is left to the full parser
    const std::from_chars_result r = std::from_chars(p, token_end, value);
    if (r.ec != std::errc() || r.ptr != token_end || !std::isfinite(value)) return nullptr;
    out.push_back(value);
    p = token_end;
    if (p >= end) return nullptr;
    if (*p == ']') return p + 1;
    if (*p != ',') return nullptr;
    ++p;
  }
}

bool TakeFloatArrays(const char *data, size_t n, const std::vector<std::string_view> &keys,
                     std::vector<std::vector<double>> &arrays, std::string &rest) {
  const char *p = data;
  const char *const end = data + n;
  arrays.assign(keys.size(), {});
  std::vector<bool> found(keys.size(), false);
  rest.clear();
  rest.reserve(n);
  if (p >= end || *p != '{') return false;
  const char *kept_from = p;  // the start of what has not yet been copied to rest
  int depth = 0;
  bool in_string = false;
  for (; p < end; ++p) {
    const char c = *p;
    if (in_string) {
      if (c == '\\') {
        ++p;  // the escaped character, whatever it is
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '{':
      case '[':
        ++depth;
        break;
      case '}':
      case ']':
        --depth;
        break;
      case ',': {
        if (depth != 1) break;
        // a member of the object itself begins after this comma: one of the keys?
        const char *key = p + 1;
        for (size_t k = 0; k < keys.size(); ++k) {
          const std::string_view name = keys[k];
          const size_t head = name.size() + 3;  // "name":
          if (static_cast<size_t>(end - key) <= head || key[0] != '"' ||
              std::string_view(key + 1, name.size()) != name || key[name.size() + 1] != '"' ||
              key[name.size() + 2] != ':') {
            continue;
          }
          // the comma follows a value's last character and the member is followed by another
          // member, the end of the object or the end of what is read (the caller's cut):
          // taken out, the object is as valid as before
          const char before = p[-1];
          if (found[k] || !(before == '"' || before == ']' || before == '}' || before == 'e' ||
                            before == 'l' || IsDigit(before))) {
            return false;
          }
          const char *after = ReadFloatArray(key + head, end, arrays[k]);
          if (after == nullptr || (after < end && *after != ',' && *after != '}')) {
            return false;
          }
          found[k] = true;
          rest.append(kept_from, p);
          kept_from = after;
          p = after - 1;  // the loop's ++p: at the comma or brace after the member
          break;
        }
        break;
      }
      default:
        break;
    }
  }
  for (const bool f : found) {
    if (!f) return false;
  }
  rest.append(kept_from, end);
  return true;
}

}  // namespace streamtag
