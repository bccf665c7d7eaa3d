// tvm_runner.cc - load a TVM Relax model library (model.so) and run its `main` on .npy inputs.
//
// This is the device-side loader that edgebuild ships in TVM bundles, and also what the build uses
// to check an ARM64 artifact on an x86 host under qemu-aarch64-static.
//
// Build on the device (libtvm_runtime.so, libtvm_ffi.so and include/ come with the bundle; they are
// the files of the apache-tvm and apache-tvm-ffi wheels for the device's architecture):
//
//   g++ -std=c++17 -O2 tvm_runner.cc -I include -L . -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi \
//       -Wl,-rpath,'$ORIGIN' -o tvm_runner
//
// Run:
//
//   ./tvm_runner model.so IN_DIR OUT_DIR
//
// IN_DIR holds the inputs of `main` as 0.npy, 1.npy, ... in the order of main's parameters
// (NumPy .npy format version 1.0, little-endian, C order). Every output is written to OUT_DIR as
// 0.npy, 1.npy, ...: a tuple result is flattened depth-first, a shape becomes an int64 tensor and a
// scalar a 0-d tensor. Exit status 0 on success; on failure one line on stderr says why.

#include "tvm_npy.h"

namespace {

// Writes one result value, recursing into tuples; returns the next output index.
int WriteOutputs(const ffi::Any& value, const std::string& out_dir, int index) {
  if (auto tensor = value.as<ffi::Tensor>()) {
    const DLTensor* dl = tensor->GetDLTensorPtr();
    if (dl->device.device_type != kDLCPU) throw std::runtime_error("output is not on the CPU");
    if (!tensor->IsContiguous()) throw std::runtime_error("output tensor is not contiguous");
    std::vector<int64_t> shape(dl->shape, dl->shape + dl->ndim);
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", dl->dtype, shape,
             static_cast<const char*>(dl->data) + dl->byte_offset);
    return index + 1;
  }
  if (auto tuple = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *tuple) index = WriteOutputs(item, out_dir, index);
    return index;
  }
  if (auto shape = value.as<ffi::Shape>()) {
    std::vector<int64_t> dims(shape->begin(), shape->end());
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", DLDataType{kDLInt, 64, 1},
             {static_cast<int64_t>(dims.size())}, dims.data());
    return index + 1;
  }
  if (auto number = value.try_cast<double>(); number && value.type_index() == ffi::TypeIndex::kTVMFFIFloat) {
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", DLDataType{kDLFloat, 64, 1}, {}, &*number);
    return index + 1;
  }
  if (auto integer = value.try_cast<int64_t>()) {
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", DLDataType{kDLInt, 64, 1}, {}, &*integer);
    return index + 1;
  }
  throw std::runtime_error("output of type " + value.GetTypeKey() + " cannot be written");
}

int RunOne(ffi::Module vm, const std::string& in_dir, const std::string& out_dir) {
  ffi::Function main_fn = vm->GetFunction("main").value();
  int64_t arity = vm->GetFunction("get_function_arity").value()("main").cast<int64_t>();

  std::vector<ffi::Tensor> inputs;
  for (int64_t i = 0; i < arity; ++i) {
    std::string path = in_dir + "/" + std::to_string(i) + ".npy";
    if (!std::ifstream(path)) {
      throw std::runtime_error("main takes " + std::to_string(arity) + " inputs but " + std::to_string(i) +
                               " were given");
    }
    inputs.push_back(ToTensor(ReadNpy(path)));
  }
  if (std::ifstream(in_dir + "/" + std::to_string(arity) + ".npy")) {
    throw std::runtime_error("main takes " + std::to_string(arity) + " inputs but more were given");
  }
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  return WriteOutputs(result, out_dir, 0);
}

// IN_DIR holds 0.npy, 1.npy, ... (one call), or subdirectories 0/, 1/, ... each holding one call's
// inputs (many calls on one loaded model: outputs go to OUT_DIR/0/, OUT_DIR/1/, ...).
int Run(const std::string& model_path, const std::string& in_dir, const std::string& out_dir) {
  ffi::Module vm = LoadVm(model_path);
  if (!std::filesystem::is_directory(in_dir + "/0")) return RunOne(vm, in_dir, out_dir);
  int total = 0;
  for (int call = 0; std::filesystem::is_directory(in_dir + "/" + std::to_string(call)); ++call) {
    std::string out = out_dir + "/" + std::to_string(call);
    std::filesystem::create_directories(out);
    total += RunOne(vm, in_dir + "/" + std::to_string(call), out);
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " model.so IN_DIR OUT_DIR" << std::endl;
    return 2;
  }
  try {
    int count = Run(argv[1], argv[2], argv[3]);
    std::cout << "wrote " << count << " output(s)" << std::endl;
    return 0;
  } catch (const ffi::Error& error) {
    std::cerr << "tvm_runner: " << error.kind() << ": " << error.message() << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "tvm_runner: " << error.what() << std::endl;
  }
  return 1;
}
