# The torch precompiled header costs every file that uses it ~10 s on the 2-core machines even when
# the file never touches torch (loading and checking a header of several hundred MB). Half of the
# library's sources (tokenizers, formats, the monitor, the report) reach no torch header: they are
# compiled without it, which takes minutes off a first build. A file "reaches torch" when its
# quoted includes, followed through this repository's headers, name a torch/, ATen/ or c10/ header.

# Sets ${out} to the path of a quoted include `name` written in `from`, or "" when it is not one of
# this repository's files (a system or third-party header).
function(lineage_resolve_include name from out)
  get_filename_component(dir ${from} DIRECTORY)
  foreach(base ${dir} ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tools/lineage)
    if(EXISTS ${base}/${name} AND NOT IS_DIRECTORY ${base}/${name})
      get_filename_component(abs ${base}/${name} ABSOLUTE)
      set(${out} ${abs} PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

# Sets ${out} TRUE when `file` reaches a torch header.
function(lineage_reaches_torch file out)
  set(todo ${file})
  set(seen "")
  while(todo)
    list(POP_FRONT todo f)
    if(f IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${f})
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    foreach(line IN LISTS lines)
      if(line MATCHES "[<\"](torch|ATen|c10|caffe2)/")
        set(${out} TRUE PARENT_SCOPE)
        return()
      endif()
      if(line MATCHES "\"([^\"]+)\"")
        lineage_resolve_include(${CMAKE_MATCH_1} ${f} inc)
        if(inc)
          list(APPEND todo ${inc})
        endif()
      endif()
    endforeach()
  endwhile()
  set(${out} FALSE PARENT_SCOPE)
endfunction()

# Marks the given sources that reach no torch header SKIP_PRECOMPILE_HEADERS.
function(lineage_skip_pch_where_torch_is_not_used)
  foreach(src IN LISTS ARGN)
    lineage_reaches_torch(${src} uses)
    if(NOT uses)
      set_source_files_properties(${src} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endforeach()
endfunction()
