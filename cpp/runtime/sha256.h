/* SHA-256 (FIPS 180-4), for the model file's checksums. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace facet {

// Lower-case hex digest of data[0..size).
std::string sha256_hex(const void *data, size_t size);

}  // namespace facet
