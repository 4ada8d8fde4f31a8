// A small Android library module with the two example flows. It compiles the GENERATED
// Kotlin bindings straight from client-ffi/bindings/kotlin (scripts/gen-bindings.sh) and
// packages libbuurtsync_client.so per ABI from src/main/jniLibs (see README.md).
// Not built on the buurtsync CI machine: it has no Android SDK.
plugins {
    id("com.android.library") version "8.7.3"
    kotlin("android") version "2.1.0"
}

android {
    namespace = "nl.buurtsync.example"
    compileSdk = 35
    defaultConfig { minSdk = 26 }
    sourceSets["main"].java.srcDirs("src/main/kotlin", "../../client-ffi/bindings/kotlin")
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin { jvmToolchain(17) }

dependencies {
    implementation("net.java.dev.jna:jna:5.15.0@aar") // UniFFI's Kotlin bindings use JNA
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}
