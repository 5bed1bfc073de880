// swift-tools-version:5.9
// diffusion-rt for iOS and macOS apps. The library is the static Rust library, packaged by
// build-xcframework.sh (run on a Mac) as DiffusionRT.xcframework beside this file; CDiffusionRT is
// its C API (include/diffusion_rt.h with module/module.modulemap), DiffusionRT the Swift wrapper.
import PackageDescription

let package = Package(
    name: "DiffusionRT",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [.library(name: "DiffusionRT", targets: ["DiffusionRT"])],
    targets: [
        .binaryTarget(name: "CDiffusionRT", path: "DiffusionRT.xcframework"),
        .target(name: "DiffusionRT", dependencies: ["CDiffusionRT"], linkerSettings: [.linkedFramework("CoreML")]),
    ]
)
