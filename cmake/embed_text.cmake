# Writes a C++ source defining `std::string_view recgpt::${FUNCTION}()` that returns the bytes of ${INPUT}.
# Usage: cmake -DINPUT=file -DOUTPUT=file.cpp -DFUNCTION=name -P embed_text.cmake
file(READ "${INPUT}" content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," content "${content}")
file(WRITE "${OUTPUT}" "// Generated from ${INPUT}; do not edit.\n#include <string_view>\nnamespace recgpt {\n"
     "std::string_view ${FUNCTION}() {\n  static constexpr char kBytes[] = {${content} 0};\n"
     "  return {kBytes, sizeof(kBytes) - 1};\n}\n}  // namespace recgpt\n")
