{
  "targets": [
    {
      "target_name": "fuse3_lowlevel",
      "sources": ["fuse3_lowlevel.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)", "-lm"]
    }
  ]
}
