// Numbers written the way Python's json module writes them (float.__repr__: the shortest digits
// that read back to the same double), so that C++ can write the number arrays of a canonical
// JSON message byte for byte as the Python encoder would, at a fraction of its cost; and the
// float arrays of a message read back, each value the double Python's json and orjson read.
#ifndef STREAMTAG_JSON_NUMBERS_H_
#define STREAMTAG_JSON_NUMBERS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace streamtag {

// Appends repr(x) of a finite double: "0.25", "1e-05", "1.5e+16", "-0.0", "3.0".
void AppendFloatRepr(double x, std::string &out);

// Writes "[a,b,...]": each value rounded to `decimals` places as numpy.round does, spelled as
// repr. Returns false, leaving `out` unspecified, when a rounded value is not finite (the
// caller's slower path then names it). Throws std::invalid_argument for decimals outside 0-15.
bool RoundedJsonArray(const double *values, size_t n, int decimals, std::string &out);

// Reads "[a,b,...]" at `p` (before `end`): one or more JSON numbers, each with a fraction or an
// exponent (what Python's json and orjson read as a float), finite, separated by bare commas.
// Returns the position after "]" with the values appended to `out`; nullptr for anything else
// (an integer, white space, a value out of the range of a double, an empty array, not JSON),
// which a caller leaves to a full JSON parser.
const char *ReadFloatArray(const char *p, const char *end, std::vector<double> &out);

// Takes the members named `keys` (each a float array, ReadFloatArray) out of the JSON object
// data[0, n): `arrays` gets each key's values, `rest` the object without those members (each
// with the comma before it). A member counts where it stands in the object itself, not inside
// a value; each key must be there once, and not first. False for anything else: a caller
// parses the object whole instead. Of a valid JSON object, `rest` is valid and holds everything
// else; of an invalid one, `rest` is invalid too (a member taken out lay between the end of a
// value and a comma, the closing brace or the end of `data`). `rest` ends where `data` does: a
// caller that stops before the object's end closes it.
bool TakeFloatArrays(const char *data, size_t n, const std::vector<std::string_view> &keys,
                     std::vector<std::vector<double>> &arrays, std::string &rest);

}  // namespace streamtag

#endif  // STREAMTAG_JSON_NUMBERS_H_
