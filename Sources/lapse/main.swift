import APISRPlugin
import DiffusionPlugin
import MagicTimePlugin
import StreamingT2VPlugin
import LapseCLI
import LapseGraph
import MediaPlugin
import TensorIOPlugin

// Every built-in node family registers here, exactly as an external plugin would through its entry point.
LapseCLI.main {
    try LapseCLI.registry(plugins: [MediaPlugin.self, TensorIOPlugin.self, APISRPlugin.self, DiffusionPlugin.self, MagicTimePlugin.self, StreamingT2VPlugin.self])
}
