// whisper_runner.cc - greedy Whisper transcription with TVM-compiled encoder.so and decoder.so.
//
// The device-side loop that edgebuild ships in TVM speech bundles, and what the build runs under
// qemu-aarch64-static to verify an ARM64 bundle's word error rate. It is the same loop as
// compiler/families/speech/generate.py:greedy:
//
//   cross_k, cross_v = encoder(mel)                     // once per 30 s window
//   k = v = zeros([layers, 1, max_tokens, d_model])     // the decoder's fixed-capacity cache
//   for position, token in prompt + generated:
//     logits, k, v = decoder(token, position, k, v, cross_k, cross_v)
//     next = argmax(logits + (first ? begin_mask : mask))   // stop at <|endoftext|>
//
// Build on the device (beside tvm_npy.h; libtvm_runtime.so, libtvm_ffi.so and include/ as for
// tvm_runner.cc):
//
//   g++ -std=c++17 -O2 whisper_runner.cc -I include -L . -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi \
//       -Wl,-rpath,'$ORIGIN' -o whisper_runner
//
// Run:
//
//   ./whisper_runner encoder.so decoder.so SETTINGS_DIR IN_DIR OUT_DIR
//
// SETTINGS_DIR: prompt.npy (int64 token ids), limits.npy (int64 [eos, max_tokens, layers, d_model]),
// mask.npy and begin_mask.npy (float32 [vocab], 0 or -inf: generation_config.json's suppress and
// suppress_at_begin lists). IN_DIR: 0.npy, 1.npy, ... one log-mel [1, 80, 3000] float32 per clip
// (compiler/families/speech/features.py:log_mel). OUT_DIR gets 0.npy, 1.npy, ...: the generated token ids
// (int64, without the prompt and <|endoftext|>); tokenizer.json turns them into text.

#include "tvm_npy.h"

#include <cmath>
#include <limits>

namespace {

struct Settings {
  std::vector<int64_t> prompt;
  int64_t eos, max_tokens, layers, d_model;
  std::vector<float> mask, begin_mask;
};

std::vector<float> Floats(const NpyArray& array) {
  std::vector<float> values(array.bytes.size() / sizeof(float));
  std::memcpy(values.data(), array.bytes.data(), array.bytes.size());
  return values;
}

Settings ReadSettings(const std::string& dir) {
  Settings settings;
  NpyArray prompt = ReadNpy(dir + "/prompt.npy");
  settings.prompt.resize(prompt.bytes.size() / sizeof(int64_t));
  std::memcpy(settings.prompt.data(), prompt.bytes.data(), prompt.bytes.size());
  NpyArray limits = ReadNpy(dir + "/limits.npy");
  const int64_t* values = reinterpret_cast<const int64_t*>(limits.bytes.data());
  settings.eos = values[0];
  settings.max_tokens = values[1];
  settings.layers = values[2];
  settings.d_model = values[3];
  settings.mask = Floats(ReadNpy(dir + "/mask.npy"));
  settings.begin_mask = Floats(ReadNpy(dir + "/begin_mask.npy"));
  if (settings.prompt.empty() || settings.mask.size() != settings.begin_mask.size()) {
    throw std::runtime_error("settings: empty prompt or masks of different sizes");
  }
  return settings;
}

ffi::Tensor NewTensor(std::vector<int64_t> shape, DLDataType dtype) {
  DLDevice cpu{kDLCPU, 0};
  return ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype, cpu);
}

ffi::Array<ffi::Any> Call(ffi::Function& fn, std::vector<ffi::Tensor> inputs) {
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  return result.cast<ffi::Array<ffi::Any>>();
}

std::vector<int64_t> Transcribe(ffi::Function& encoder, ffi::Function& decoder, const Settings& s,
                                const NpyArray& mel) {
  ffi::Array<ffi::Any> cross = Call(encoder, {ToTensor(mel)});
  ffi::Tensor cross_k = cross[0].cast<ffi::Tensor>(), cross_v = cross[1].cast<ffi::Tensor>();
  const DLDataType f32{kDLFloat, 32, 1}, i64{kDLInt, 64, 1};
  ffi::Tensor k = NewTensor({s.layers, 1, s.max_tokens, s.d_model}, f32);
  ffi::Tensor v = NewTensor({s.layers, 1, s.max_tokens, s.d_model}, f32);
  size_t cache_bytes = static_cast<size_t>(s.layers * s.max_tokens * s.d_model) * sizeof(float);
  std::memset(k.data_ptr(), 0, cache_bytes);
  std::memset(v.data_ptr(), 0, cache_bytes);

  std::vector<int64_t> generated;
  int64_t token = s.prompt[0];
  for (int64_t position = 0; position < s.max_tokens; ++position) {
    ffi::Tensor token_t = NewTensor({1, 1}, i64), position_t = NewTensor({1}, i64);
    *static_cast<int64_t*>(token_t.data_ptr()) = token;
    *static_cast<int64_t*>(position_t.data_ptr()) = position;
    ffi::Array<ffi::Any> out = Call(decoder, {token_t, position_t, k, v, cross_k, cross_v});
    k = out[1].cast<ffi::Tensor>();
    v = out[2].cast<ffi::Tensor>();
    if (position + 1 < static_cast<int64_t>(s.prompt.size())) {  // still feeding the prompt
      token = s.prompt[position + 1];
      continue;
    }
    const float* logits = static_cast<const float*>(out[0].cast<ffi::Tensor>().data_ptr());
    const std::vector<float>& mask = generated.empty() ? s.begin_mask : s.mask;
    float best = -std::numeric_limits<float>::infinity();
    int64_t best_id = s.eos;
    for (size_t id = 0; id < mask.size(); ++id) {
      float score = logits[id] + mask[id];
      if (score > best) best = score, best_id = static_cast<int64_t>(id);
    }
    if (best_id == s.eos) break;
    generated.push_back(best_id);
    token = best_id;
  }
  return generated;
}

int Run(const std::string& encoder_so, const std::string& decoder_so, const std::string& settings_dir,
        const std::string& in_dir, const std::string& out_dir) {
  Settings settings = ReadSettings(settings_dir);
  ffi::Module encoder_vm = LoadVm(encoder_so), decoder_vm = LoadVm(decoder_so);
  ffi::Function encoder = encoder_vm->GetFunction("main").value();
  ffi::Function decoder = decoder_vm->GetFunction("main").value();
  int clips = 0;
  for (; std::ifstream(in_dir + "/" + std::to_string(clips) + ".npy"); ++clips) {
    std::vector<int64_t> tokens = Transcribe(encoder, decoder, settings, ReadNpy(in_dir + "/" + std::to_string(clips) + ".npy"));
    WriteNpy(out_dir + "/" + std::to_string(clips) + ".npy", DLDataType{kDLInt, 64, 1},
             {static_cast<int64_t>(tokens.size())}, tokens.data());
  }
  return clips;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: " << argv[0] << " encoder.so decoder.so SETTINGS_DIR IN_DIR OUT_DIR" << std::endl;
    return 2;
  }
  try {
    int clips = Run(argv[1], argv[2], argv[3], argv[4], argv[5]);
    std::cout << "transcribed " << clips << " clip(s)" << std::endl;
    return 0;
  } catch (const ffi::Error& error) {
    std::cerr << "whisper_runner: " << error.kind() << ": " << error.message() << std::endl;
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "whisper_runner: " << error.what() << std::endl;
    return 1;
  }
}
