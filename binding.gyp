# The same two products as CMakeLists.txt, built by node-gyp: the CPU engine library
# (libtorch, no N-API) and the thin addon that dlopens it. libtorch's location, version and
# ABI come from scripts/torch-config.mjs, i.e. from the run-time lookup of lib/libtorch.ts.
# CI builds this too (npm run test:gyp, which also writes engines.json), so neither build rots.
{
  'variables': {
    'libtorch_dir': '<!(node scripts/torch-config.mjs dir)',
    'engine_name': '<!(node scripts/torch-config.mjs engine-name)',
    'cxx11_abi': '<!(node scripts/torch-config.mjs abi)',
    'rpath_link': '<!(node scripts/torch-config.mjs rpath-link)',
    'cxx_std': '<!(node scripts/torch-config.mjs cxx-std)',
  },
  'target_defaults': {
    'cflags_cc!': ['-fno-rtti', '-fno-exceptions', '-std=gnu++17'],
    'cflags_cc': ['-std=<(cxx_std)', '-frtti', '-fexceptions', '-fvisibility=hidden', '-Wall', '-Wextra'],
    # Node's common.gypi defines the ABI as 1; libtorch's own choice must win.
    'defines!': ['_GLIBCXX_USE_CXX11_ABI=1'],
    'defines': ['_GLIBCXX_USE_CXX11_ABI=<(cxx11_abi)'],
  },
  'targets': [
    {
      'target_name': 'bertgate_engine',
      'product_name': '<(engine_name)',
      'type': 'shared_library',
      'product_prefix': 'lib',
      'product_dir': '<(PRODUCT_DIR)',
      'sources': [
        'native/engine/amx_int8_gemm.cpp',
        'native/engine/cpu_allocator.cpp',
        'native/engine/cpu_scores.cpp',
        'native/engine/engine_library.cpp',
        'native/engine/fbgemm_int8_gemm.cpp',
        'native/engine/fused_log_softmax.cpp',
        'native/engine/int8_linear.cpp',
        'native/engine/logits.cpp',
        'native/engine/ood_gate.cpp',
        'native/engine/torch_engine.cpp',
        'native/engine/torchscript_model.cpp',
        'native/engine/torch_warnings.cpp',
      ],
      'cflags_cc': [
        '-O3',
        '-fopenmp-simd',
        # As CMakeLists.txt says: vector clamps and no fused multiply-add (int8_linear.cpp).
        '-fno-trapping-math',
        '-ffp-contract=off',
        '-isystem', '<(libtorch_dir)/include',
        '-isystem', '<(libtorch_dir)/include/torch/csrc/api/include',
      ],
      'libraries': [
        '<(libtorch_dir)/lib/libtorch_cpu.so',
        '<(libtorch_dir)/lib/libc10.so',
      ],
      'ldflags': ['<@(rpath_link)'],
    },
    {
      'target_name': 'bertgate',
      'dependencies': ['bertgate_engine'],
      'sources': [
        'native/addon/addon.cpp',
        'native/addon/engine_handle.cpp',
        'native/addon/engine_loader.cpp',
        'native/addon/js_values.cpp',
        'native/addon/settle.cpp',
        'native/addon/worker_thread.cpp',
      ],
      'include_dirs': ["<!(node -p \"require('node-addon-api').include_dir\")"],
      'defines': ['NAPI_VERSION=8', 'NAPI_CPP_EXCEPTIONS', 'BERTGATE_BUILD_SYSTEM="node-gyp"'],
      # The addon dlopens the engine itself; linking it would make libtorch a load-time need.
      'libraries!': ['<(PRODUCT_DIR)/lib<(engine_name).so'],
      'link_settings': {'libraries': ['-ldl', '-lpthread']},
    },
  ],
}
