{
  "targets": [
    {
      "target_name": "sift_ft",
      "sources": [
        "<!@(node scripts/sources.js cpu)"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-frtti", "-Wno-sign-compare"],
      "libraries": ["-lpthread", "-ldl"],
      "conditions": [
        ["OS=='linux'", { "ldflags": ["-static-libstdc++", "-Wl,--exclude-libs,ALL", "-Wl,--version-script=<(module_root_dir)/native/exports.map"] }]
      ],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      }
    }
  ]
}
