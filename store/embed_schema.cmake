# Turns the schema migrations (schema/NNN_name.sql) into a C source holding
# each file as a NUL-terminated byte array, so the binary needs no files at
# run time. Invoked by store/CMakeLists.txt with -DOUT=<file.c> -DFILES=<a;b>.
set(arrays "")
set(entries "")
set(count 0)
foreach(f ${FILES})
  get_filename_component(base ${f} NAME_WE)
  if(NOT base MATCHES "^([0-9][0-9][0-9])_[a-z0-9_]+$")
    message(FATAL_ERROR "schema file ${f}: name must be NNN_lower_snake.sql")
  endif()
  math(EXPR version "${CMAKE_MATCH_1}")
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n    " hex "${hex}")
  string(APPEND arrays "static const unsigned char sql_${base}[] = {\n    ${hex}0x00};\n\n")
  string(APPEND entries "    {${version}, \"${base}\", (const char *)sql_${base}},\n")
  math(EXPR count "${count} + 1")
endforeach()
file(WRITE ${OUT}.tmp
"/* Generated from store/schema/NNN_name.sql by store/embed_schema.cmake. Do not edit. */
#include \"store_sqlite_int.h\"

${arrays}const struct tb__store_migration tb__store_migrations[] = {
${entries}};

const size_t tb__store_migration_count = ${count};
")
# Only touch the output when it changed, so an unchanged schema rebuilds nothing.
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
