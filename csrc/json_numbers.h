// Numbers written the way Python's json module writes them (float.__repr__: the shortest digits
// that read back to the same double), so that C++ can write the number arrays of a canonical
// JSON message byte for byte as the Python encoder would, at a fraction of its cost.
#ifndef STREAMTAG_JSON_NUMBERS_H_
#define STREAMTAG_JSON_NUMBERS_H_

#include <cstddef>
#include <string>

namespace streamtag {

// Appends repr(x) of a finite double: "0.25", "1e-05", "1.5e+16", "-0.0", "3.0".
void AppendFloatRepr(double x, std::string &out);

// Writes "[a,b,...]": each value rounded to `decimals` places as numpy.round does, spelled as
// repr. Returns false, leaving `out` unspecified, when a rounded value is not finite (the
// caller's slower path then names it). Throws std::invalid_argument for decimals outside 0-15.
bool RoundedJsonArray(const double *values, size_t n, int decimals, std::string &out);

}  // namespace streamtag

#endif  // STREAMTAG_JSON_NUMBERS_H_
